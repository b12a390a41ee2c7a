from __future__ import annotations

import random

import pytest

from gateway.accounting.usage import CreditRules, UsageRecorder
from gateway.config import CreditRule
from gateway.manage.service import ManagementService
from gateway.routes import normalized_path
from gateway.store import KeyStore
from tests.fakes import Clock

MIDNIGHT = 1_796_601_600.0  # 2026-12-07T00:00:00Z


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
    clock = Clock(100.0)
    recorder = UsageRecorder(store, clock=clock)
    changes = store.changes()
    recorder.forwarded(created.record.id)
    clock.tick(100)
    recorder.forwarded(created.record.id)
    recorder.charge(created.record.id, 3)
    clock.tick(100)
    recorder.rate_limited(created.record.id)
    await recorder.flush()
    await recorder.flush()  # nothing pending: nothing written twice
    key = await service.get_key(created.record.id)
    assert (key.requests, key.rate_limited, key.credits, key.last_used_at) == (2, 1, 3, 300.0)
    assert store.changes() == changes  # usage does not empty the gateways' caches
    [usage] = await service.usage("alice")
    assert (usage.requests, usage.rate_limited, usage.credits, usage.last_used_at) == (2, 1, 3, 300.0)


async def test_usage_lands_on_the_utc_day_it_happened(store: KeyStore) -> None:
    service = ManagementService(store, key_prefix="mk_live_")
    await service.add_user("alice")
    key_id = (await service.create_key("alice")).record.id
    clock = Clock(MIDNIGHT - 5)
    recorder = UsageRecorder(store, clock=clock)
    recorder.forwarded(key_id)
    recorder.charge(key_id, 2)
    clock.tick(10)  # past midnight, no flush in between: the day still splits
    recorder.forwarded(key_id)
    recorder.rate_limited(key_id)
    await recorder.flush()
    first, last, days = await service.daily_usage(key_id=key_id, since="2026-12-06", until="2026-12-07")
    assert [(d.day, d.requests, d.rate_limited, d.credits) for d in days] == [
        ("2026-12-06", 1, 0, 2),
        ("2026-12-07", 1, 1, 0),
    ]


async def test_a_keys_days_add_up_to_its_totals_after_any_workload(store: KeyStore) -> None:
    """Random requests, charges and refusals over a week, flushed at random moments (days end
    between flushes, or not): the days of each key and user add up to the lifetime counters."""
    rng = random.Random(14)
    service = ManagementService(store, key_prefix="mk_live_")
    for user in ("alice", "bob"):
        await service.add_user(user)
    keys = [(await service.create_key(user)).record.id for user in ("alice", "alice", "bob")]
    clock = Clock(MIDNIGHT - 3 * 86400 + 17)
    recorder = UsageRecorder(store, clock=clock)
    for _ in range(3000):
        clock.tick(rng.expovariate(1 / 200))  # a week in all, give or take
        key_id = rng.choice(keys)
        action = rng.random()
        if action < 0.7:
            recorder.forwarded(key_id)
            if rng.random() < 0.5:
                recorder.charge(key_id, rng.randint(1, 5))
        else:
            recorder.rate_limited(key_id)
        if rng.random() < 0.01:
            await recorder.flush()
    await recorder.flush()
    since, until = "2026-11-01", "2026-12-31"
    for key_id in keys:
        key = await service.get_key(key_id)
        _, _, days = await service.daily_usage(key_id=key_id, since=since, until=until)
        assert len(days) > 3
        sums = tuple(sum(getattr(d, name) for d in days) for name in ("requests", "rate_limited", "credits"))
        assert sums == (key.requests, key.rate_limited, key.credits)
    for summed in await service.usage():
        _, _, days = await service.daily_usage(user_id=summed.user_id, since=since, until=until)
        assert sum(d.requests for d in days) == summed.requests and sum(d.credits for d in days) == summed.credits
