from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adversarial.fake_upstream import FakeUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """The recording, misbehaving upstream (``fake_upstream.py``), one per test module."""
    fake = FakeUpstream()
    yield fake
    fake.close()
