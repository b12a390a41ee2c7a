from __future__ import annotations

import pytest

from gateway.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param(30, 30.0, id="int"),
        pytest.param(0.5, 0.5, id="float"),
        pytest.param("500ms", 0.5, id="ms"),
        pytest.param("30s", 30.0, id="s"),
        pytest.param("15m", 900.0, id="m"),
        pytest.param("12h", 43200.0, id="h"),
        pytest.param("90d", 7776000.0, id="d"),
        pytest.param("2.5s", 2.5, id="fraction"),
        pytest.param("45", 45.0, id="bare-string"),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "fast", "10 weeks", "-5s", "5x", True, None, [1]])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [(1048576, 1048576), ("10MiB", 10 * 1024**2), ("512KiB", 512 * 1024), ("1GiB", 1024**3), ("10MB", 10**7)],
)
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["big", "10 MiBs", -1, True, 1.5])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(("seconds", "text"), [(60, "1m"), (90, "90s"), (86400, "1d"), (0.5, "500ms"), (7200, "2h")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
