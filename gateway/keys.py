"""API keys: their format, generation and hashing. Pure functions, no I/O.

A key is ``<prefix><secret><checksum>``:

- the prefix from ``keys.prefix`` (default ``mk_live_``), so people and secret scanners can tell
  what a leaked string is;
- a secret of 40 base62 characters from ``secrets`` (about 238 bits);
- a checksum: CRC32 of prefix and secret, 6 base62 characters (as GitHub's tokens do), so a
  mistyped or made-up key is rejected without touching the store.

Only the SHA-256 of the full key is stored. The display prefix (prefix plus the first 4
characters of the secret, e.g. ``mk_live_aB3x``) is what lists show to identify a key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

__all__ = [
    "KEY_ID_PREFIX",
    "SECRET_LENGTH",
    "display_prefix",
    "generate_key",
    "hash_key",
    "is_well_formed",
    "new_key_id",
]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SECRET_LENGTH = 40
CHECKSUM_LENGTH = 6
DISPLAY_SECRET_CHARS = 4
KEY_ID_PREFIX = "key_"
KEY_ID_LENGTH = 16
PREFIX_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
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


def hash_key(key: bytes) -> str:
    """The lowercase hex SHA-256 of the full key: what the store keeps."""
    return hashlib.sha256(key).hexdigest()


def display_prefix(key: str, prefix: str) -> str:
    """The configured prefix plus the first characters of the secret, e.g. ``mk_live_aB3x``."""
    return key[: len(prefix) + DISPLAY_SECRET_CHARS]


def new_key_id() -> str:
    """A short, public, stable identifier for a key, e.g. ``key_3kTb9QzLm2XvW8aP``."""
    return KEY_ID_PREFIX + _random_base62(KEY_ID_LENGTH)
