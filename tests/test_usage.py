from __future__ import annotations

import pytest

from gateway.accounting.usage import CreditRules, UsageRecorder, normalized_path
from gateway.config import CreditRule
from gateway.manage.service import ManagementService
from gateway.store import KeyStore


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/api/v1/mockups/generate", "/api/v1/mockups/generate"),
        ("/api/v1/mockups/./generate", "/api/v1/mockups/generate"),
        ("/api/v1/x/../mockups/generate", "/api/v1/mockups/generate"),
        ("//api//v1/mockups//generate", "/api/v1/mockups/generate"),
        ("/api/v1/", "/api/v1/"),
        ("/", "/"),
    ],
)
def test_normalized_path(path: str, normal: str) -> None:
    assert normalized_path(path) == normal


def test_credit_rules() -> None:
    rules = CreditRules(
        (
            CreditRule("POST", "/api/v1/mockups/generate", 1),
            CreditRule("*", "/api/v1/bulk/*", 5),
        )
    )
    assert rules.cost("POST", "/api/v1/mockups/generate") == 1
    assert rules.cost("POST", "/api/v1/mockups/./generate") == 1
    assert rules.cost("GET", "/api/v1/mockups/generate") == 0
    assert rules.cost("POST", "/api/v1/mockups/generate/") == 0
    assert rules.cost("DELETE", "/api/v1/bulk/abc") == 5
    assert rules.cost("GET", "/api/v1/templates") == 0
    assert CreditRules(()).cost("POST", "/x") == 0


async def test_flush_adds_to_the_store_without_a_change(store: KeyStore) -> None:
    service = ManagementService(store, key_prefix="mk_live_")
    await service.add_user("alice")
    created = await service.create_key("alice")
    clock_values = iter([100.0, 200.0, 300.0])
    recorder = UsageRecorder(store, clock=lambda: next(clock_values))
    changes = store.changes()
    recorder.forwarded(created.record.id)
    recorder.forwarded(created.record.id)
    recorder.charge(created.record.id, 3)
    recorder.rate_limited(created.record.id)
    await recorder.flush()
    await recorder.flush()  # nothing pending: nothing written twice
    key = await service.get_key(created.record.id)
    assert (key.requests, key.rate_limited, key.credits, key.last_used_at) == (2, 1, 3, 300.0)
    assert store.changes() == changes  # usage does not empty the gateways' caches
    [usage] = await service.usage("alice")
    assert (usage.requests, usage.rate_limited, usage.credits, usage.last_used_at) == (2, 1, 3, 300.0)
