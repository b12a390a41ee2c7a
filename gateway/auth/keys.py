"""API keys: their format, generation and hashing. Pure functions, no I/O.

The design notes: docs/internals.md, "gateway/auth/keys.py"."""

from __future__ import annotations

import hashlib
import secrets
import zlib

__all__ = [
    "KEY_ID_PREFIX",
    "SECRET_LENGTH",
    "display_prefix",
    "generate_key",
    "hash_key",
    "KeyFormat",
    "is_well_formed",
    "key_id_for_hash",
    "new_key_id",
]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SECRET_LENGTH = 40
CHECKSUM_LENGTH = 6
DISPLAY_SECRET_CHARS = 4
KEY_ID_PREFIX = "key_"
KEY_ID_LENGTH = 16
_BASE62_BYTES = frozenset(BASE62.encode())


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def _checksum(body: bytes) -> bytes:
    return _base62(zlib.crc32(body), CHECKSUM_LENGTH).encode()


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def generate_key(prefix: str) -> str:
    """A new full key; it is shown once and never stored."""
    body = prefix + _random_base62(SECRET_LENGTH)
    return body + _checksum(body.encode()).decode()


def is_well_formed(key: bytes, prefix: bytes) -> bool:
    """Whether ``key`` has the prefix, length, alphabet and checksum of a key of ours."""
    if len(key) != len(prefix) + SECRET_LENGTH + CHECKSUM_LENGTH or not key.startswith(prefix):
        return False
    rest = key[len(prefix) :]
    if not _BASE62_BYTES.issuperset(rest):
        return False
    return _checksum(key[:-CHECKSUM_LENGTH]) == key[-CHECKSUM_LENGTH:]


# A legacy key's length, prefix included: anything else is not looked up.
LEGACY_MIN_LENGTH = 16
LEGACY_MAX_LENGTH = 256


class KeyFormat:
    """Which bearer tokens are worth a store look-up: ours, checksum and all, and any of a legacy
    prefix that could be a key. Everything else is refused without a query."""

    __slots__ = ("_earlier", "_legacy", "_native", "_native_length")

    def __init__(
        self, prefix: str, legacy_prefixes: tuple[str, ...] = (), earlier_prefixes: tuple[str, ...] = ()
    ) -> None:
        self._native = prefix.encode()
        self._native_length = len(prefix) + SECRET_LENGTH + CHECKSUM_LENGTH
        self._legacy = tuple(p.encode() for p in legacy_prefixes)
        # Keys of ours minted under an earlier keys.prefix: checked as strictly as today's.
        self._earlier = tuple(p.encode() for p in earlier_prefixes)

    def accepts(self, token: bytes) -> bool:
        if is_well_formed(token, self._native):
            return True
        if any(is_well_formed(token, earlier) for earlier in self._earlier):
            return True
        if not self._legacy or not token.startswith(self._legacy):
            return False
        if len(token) == self._native_length and token.startswith(self._native):
            rest = token[len(self._native) :]
            if _BASE62_BYTES.issuperset(rest):
                return False  # ours to the letter, but its checksum is wrong: mistyped or made up
        return LEGACY_MIN_LENGTH <= len(token) <= LEGACY_MAX_LENGTH


def hash_key(key: bytes) -> str:
    """The lowercase hex SHA-256 of the full key: what the store keeps."""
    return hashlib.sha256(key).hexdigest()


def display_prefix(key: str, prefix: str) -> str:
    """The configured prefix plus the first characters of the secret, e.g. ``mk_live_aB3x``."""
    return key[: len(prefix) + DISPLAY_SECRET_CHARS]


def key_id_for_hash(key_hash: str) -> str:
    """The id of an imported key that came without one: derived from its hash, so importing the
    same key again finds the same id."""
    return KEY_ID_PREFIX + _base62(int(hashlib.sha256(key_hash.encode()).hexdigest()[:24], 16), KEY_ID_LENGTH)


def new_key_id() -> str:
    """A short, public, stable identifier for a key, e.g. ``key_3kTb9QzLm2XvW8aP``."""
    return KEY_ID_PREFIX + _random_base62(KEY_ID_LENGTH)
