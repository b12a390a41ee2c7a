"""The one route matcher that credit rules and route limits share."""

from __future__ import annotations

import pytest

from gateway.config import CreditRule
from gateway.routes import matches, normalized_path

GENERATE = CreditRule("POST", "/api/v1/mockups/generate", 1)
TEMPLATES = CreditRule("GET", "/api/v1/templates/*", 1)
ANY = CreditRule("*", "/api/v1/exports", 1)


@pytest.mark.parametrize(
    ("rule", "method", "path", "expected"),
    [
        pytest.param(GENERATE, "POST", "/api/v1/mockups/generate", True, id="exact"),
        pytest.param(GENERATE, "PUT", "/api/v1/mockups/generate", False, id="other-method"),
        pytest.param(GENERATE, "POST", "/api/v1/mockups/./generate", True, id="dot-segment"),
        pytest.param(GENERATE, "POST", "//api/v1//mockups/generate", True, id="repeated-slashes"),
        pytest.param(GENERATE, "POST", "/api/v1/mockups/x/../generate", True, id="dot-dot"),
        pytest.param(TEMPLATES, "GET", "/api/v1/templates/tpl_mug", True, id="prefix"),
        # Servers answer HEAD by doing the GET's work: HEAD must not dodge a GET route.
        pytest.param(TEMPLATES, "HEAD", "/api/v1/templates/tpl_mug", True, id="head-is-get"),
        pytest.param(GENERATE, "HEAD", "/api/v1/mockups/generate", False, id="head-is-not-post"),
        pytest.param(ANY, "DELETE", "/api/v1/exports", True, id="any-method"),
    ],
)
def test_matches(rule: CreditRule, method: str, path: str, expected: bool) -> None:
    assert matches(rule, method, normalized_path(path)) is expected
