from __future__ import annotations

import hashlib
import math
import string

import pytest

from gateway.auth.keys import (
    BASE62,
    CHECKSUM_LENGTH,
    SECRET_LENGTH,
    KeyFormat,
    display_prefix,
    generate_key,
    hash_key,
    is_well_formed,
    new_key_id,
)

PREFIX = "mk_live_"


def test_format_is_prefix_secret_checksum() -> None:
    key = generate_key(PREFIX)
    assert key.startswith(PREFIX)
    assert len(key) == len(PREFIX) + SECRET_LENGTH + CHECKSUM_LENGTH
    assert set(key[len(PREFIX) :]) <= set(string.ascii_letters + string.digits)
    assert is_well_formed(key.encode(), PREFIX.encode())
    assert SECRET_LENGTH * math.log2(len(BASE62)) >= 190


def test_keys_are_random() -> None:
    assert len({generate_key(PREFIX) for _ in range(1000)}) == 1000
    assert len({new_key_id() for _ in range(1000)}) == 1000


def test_other_prefix() -> None:
    key = generate_key("mpa_")
    assert key.startswith("mpa_")
    assert is_well_formed(key.encode(), b"mpa_")
    assert not is_well_formed(key.encode(), PREFIX.encode())


def _mutations(key: str) -> list[str]:
    swapped = "A" if key[len(PREFIX)] != "A" else "B"
    return [
        key[: len(PREFIX)] + swapped + key[len(PREFIX) + 1 :],  # one secret character mistyped
        key[:-1] + ("0" if key[-1] != "0" else "1"),  # checksum mistyped
        key[:-1],  # too short
        key + "x",  # too long
        "mk_test_" + key[len(PREFIX) :],  # another prefix
        key[:20] + "-" + key[21:],  # not base62
        key[:20] + "\u00e9" + key[21:],
    ]


def test_mistyped_or_made_up_keys_are_rejected_without_the_store() -> None:
    key = generate_key(PREFIX)
    for bad in _mutations(key):
        assert not is_well_formed(bad.encode(), PREFIX.encode()), bad
    assert not is_well_formed(b"mk_live_" + b"a" * (SECRET_LENGTH + CHECKSUM_LENGTH), PREFIX.encode())


def test_hash_and_display_prefix() -> None:
    key = generate_key(PREFIX)
    assert hash_key(key.encode()) == hashlib.sha256(key.encode()).hexdigest()
    assert display_prefix(key, PREFIX) == key[:12]
    assert new_key_id().startswith("key_")


@pytest.mark.parametrize("prefix", ["mk_live_", "mpa_", "sk_"])
def test_round_trip_for_each_prefix(prefix: str) -> None:
    for _ in range(50):
        assert is_well_formed(generate_key(prefix).encode(), prefix.encode())


def test_legacy_keys_are_looked_up_but_ours_still_need_their_checksum() -> None:
    native = generate_key("mk_live_")
    formats = KeyFormat("mk_live_", ("mk_live_", "mpa_"))
    assert formats.accepts(native.encode())
    assert formats.accepts(b"mk_live_" + b"a" * 32)  # an earlier system's key: no checksum of ours
    assert formats.accepts(b"mpa_" + b"Zz9" * 13)
    # Our shape to the letter, one character changed: the checksum still refuses it, unasked.
    changed = native[:-1] + ("a" if native[-1] != "a" else "b")
    assert not formats.accepts(changed.encode())
    assert not formats.accepts(b"sk_other_" + b"a" * 32)  # no prefix of ours or of the old ones
    assert not formats.accepts(b"mpa_short")  # too short to be a key
    assert not formats.accepts(b"mpa_" + b"a" * 300)
    assert not KeyFormat("mk_live_").accepts(b"mk_live_" + b"a" * 32)  # no legacy prefixes: ours only


def test_keys_of_an_earlier_prefix_are_ours_to_the_letter() -> None:
    formats = KeyFormat("mpa_", earlier_prefixes=("mk_live_",))
    earlier = generate_key("mk_live_").encode()
    assert formats.accepts(generate_key("mpa_").encode()) and formats.accepts(earlier)
    assert not formats.accepts(earlier[:-1] + (b"A" if earlier[-1:] != b"A" else b"B"))  # its checksum
    assert not formats.accepts(b"mk_live_" + b"a" * 32)  # not a legacy prefix: no look-up
