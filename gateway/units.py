"""Durations and byte sizes as people write them in config files and on the command line.

A duration is a number of seconds (``30``, ``0.5``) or a number with a unit: ``500ms``, ``30s``,
``15m``, ``12h``, ``90d``. A size is a number of bytes or a number with a unit: ``512KiB``,
``10MiB``, ``1GiB`` (powers of 1024) or ``10KB``, ``10MB``, ``1GB`` (powers of 1000). Rate
limits are ``limits`` library items: ``100/minute``, ``10000/day``, ``5/2minutes``; several are
separated by ``;`` or ``,`` alike (``5/second,100/hour``), wherever they are given: the config, the
CLI, the admin API, an import.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from collections.abc import Sequence

from limits import RateLimitItem, parse_many

__all__ = [
    "Limits",
    "iso_time",
    "parse_instant",
    "format_duration",
    "limit_texts",
    "parse_duration",
    "parse_limits",
    "parse_size",
    "window_name",
]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_LIMIT_SEPARATORS = re.compile(r"[;,]")
_NUMBER_WITH_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


# Beyond these a duration or a size is a typing mistake (and NaN or infinity is no number of seconds).
MAX_SECONDS = 100 * 365 * 86400.0
MAX_BYTES = 1 << 50


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``0.5``, ``"500ms"``, ``"15m"``...; ValueError if it is none of those."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 500ms, 15m, 12h or 90d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _NUMBER_WITH_UNIT.match(value)):
        number, unit = match.groups()
        if unit not in _DURATION_UNITS and unit != "":
            raise ValueError("a duration such as 30s, 500ms, 15m, 12h or 90d")
        seconds = float(number) * _DURATION_UNITS.get(unit, 1.0)
    else:
        raise ValueError("a duration such as 30s, 500ms, 15m, 12h or 90d")
    if seconds < 0:
        raise ValueError("a duration that is not negative")
    if not seconds <= MAX_SECONDS:  # NaN too: a timer of NaN seconds fails every connection
        raise ValueError("a duration of at most 100 years")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"10MiB"``, ``"512KB"``...; ValueError if it is none of those."""
    if isinstance(value, bool):
        raise ValueError("a size in bytes such as 1048576 or 10MiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _NUMBER_WITH_UNIT.match(value)):
        number, unit = match.groups()
        factor = _SIZE_UNITS.get(unit.lower() or "b")
        if factor is None:
            raise ValueError("a size in bytes such as 1048576 or 10MiB")
        scaled = float(number) * factor
        if not math.isfinite(scaled):
            raise ValueError("a size in bytes such as 1048576 or 10MiB")
        size = int(scaled)
    else:
        raise ValueError("a size in bytes such as 1048576 or 10MiB")
    if size < 0:
        raise ValueError("a size that is not negative")
    if size > MAX_BYTES:
        raise ValueError("a size of at most 1 PiB")
    return size


def format_duration(seconds: float) -> str:
    """The shortest exact form of a duration: 90 -> "90s", 3600 -> "1h", 0.5 -> "500ms"."""
    for unit in ("d", "h", "m", "s"):
        factor = _DURATION_UNITS[unit]
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{round(seconds * 1000)}ms"


Limits = tuple[RateLimitItem, ...]


def iso_time(timestamp: float | None) -> str | None:
    """ISO 8601 in UTC, to the second: 2026-11-22T02:10:00Z (None stays None)."""
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def parse_instant(text: str) -> float:
    """An ISO 8601 time (2027-01-01T00:00:00Z, or a day, 2027-01-01, meaning its start) as Unix
    seconds; a time without a zone is UTC. ValueError otherwise."""
    if not 10 <= len(text) <= 40:
        raise ValueError("not a time")
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def utc_day(now: float) -> tuple[str, float]:
    """The UTC day of ``now`` as 'YYYY-MM-DD', and when it ends (Unix seconds)."""
    start = now - now % 86400
    return time.strftime("%Y-%m-%d", time.gmtime(start)), start + 86400


def limit_texts(text: str | Sequence[str]) -> list[str]:
    """The limits given, one text each: ``"5/second, 100/hour"`` or ``["5/second;100/hour"]`` are
    ``["5/second", "100/hour"]`` (empty parts dropped)."""
    joined = text if isinstance(text, str) else ";".join(text)
    return [part.strip() for part in _LIMIT_SEPARATORS.split(joined) if part.strip()]


def parse_limits(text: str | Sequence[str]) -> Limits:
    """``"1000/minute;100000/day"``, ``"1000/minute,100000/day"`` or ``["100/minute", "10000/day"]``;
    ValueError if it is none of them."""
    texts = limit_texts(text)
    if not texts:
        raise ValueError("at least one limit such as 100/minute")
    try:
        parsed = [parse_many(part) for part in texts]
    except ValueError:
        raise ValueError("limits such as 100/minute;10000/day") from None
    # One limit per part: the library's own list parser also splits on "|", which a stored text
    # would keep as one part.
    items = tuple(item for part in parsed for item in part)
    if len(items) != len(texts) or any(item.amount < 1 for item in items):
        raise ValueError("limits such as 100/minute;10000/day")
    return items


def window_name(item: RateLimitItem) -> str:
    """``minute`` for a limit per minute, ``5minutes`` for one per 5 minutes."""
    name = item.GRANULARITY.name
    return name if item.multiples == 1 else f"{item.multiples}{name}s"
