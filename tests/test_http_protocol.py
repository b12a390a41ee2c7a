from __future__ import annotations

import pytest

from gateway.http.protocol import logged_path


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        pytest.param(b"/x?api_key=SECRET", b"/x", id="query"),
        pytest.param(b"/x#frag?y", b"/x", id="fragment"),
        pytest.param(b"http://user:PASSWORD@h/x?api_key=SECRET", b"/x", id="absolute-form-userinfo"),
        pytest.param(b"http://user:PASSWORD@h", b"", id="absolute-form-no-path"),
        pytest.param(b"http://user:PASS WORD@h/x y?q", b"/x y", id="unparseable-absolute-form"),
        pytest.param(b"/a b?c", b"/a b", id="unparseable-path"),
        pytest.param(b"/x?api_key=SEC", b"/x", id="cut-off-query"),
        pytest.param(b"*", b"*", id="asterisk"),
        pytest.param(b"user:PASSWORD@h/x", b"", id="not-a-path"),
        pytest.param(b"", b"", id="empty"),
    ],
)
def test_a_refused_request_is_logged_with_its_path_alone(target: bytes, logged: bytes) -> None:
    assert logged_path(target) == logged
