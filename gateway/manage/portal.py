"""Portal links: a one-time token (kept in the key store as its SHA-256, so the admin API, the
CLI and every portal process share them, and a restart keeps them) in a URL of the portal.

Why the store: the CLI is another process than the server, so a token in a server's memory could
not be minted by it; a signed token would need a secret shared by every process and could not be
used once only. A row taken by ``DELETE ... RETURNING`` is single-use on every store.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from gateway.config import PortalConfig
from gateway.manage.rules import InvalidField, ServiceError
from gateway.manage.service import ManagementService

__all__ = ["PORTAL_PREFIX", "PortalClosed", "PortalOff", "check_return_url", "mint_link"]

PORTAL_PREFIX = "/portal"


class PortalOff(ServiceError):
    """The portal is off (no ``portal.port``): a link would open nothing."""

    def __str__(self) -> str:
        return "the portal is off: set portal.port (GATEWAY_PORTAL__PORT) to serve it"


class PortalClosed(ServiceError):
    """The user's subscription is not active: the portal serves active users only."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} is inactive: the portal opens for active users only")


def check_return_url(url: str, allowed_hosts: tuple[str, ...]) -> str:
    """``url`` if it is an http(s) URL on one of ``allowed_hosts`` (portal.return_url_hosts),
    written as a link is: printable, no spaces (a NUL or a line break is no part of a URL)."""
    if not url.isprintable() or any(character.isspace() for character in url):
        raise InvalidField("return_url: a URL without spaces or control characters", "return_url")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port  # out of range: ValueError
    except ValueError:
        host, parts, port = "", None, None
    # "@" in the authority, even with nothing before it: no credentials in a link.
    if parts is None or parts.scheme not in ("http", "https") or "@" in parts.netloc or port == 0:
        raise InvalidField("return_url: an http:// or https:// URL", "return_url")
    if host not in allowed_hosts:
        shown = ", ".join(allowed_hosts) or "none configured"
        raise InvalidField(f"return_url: its host must be one of portal.return_url_hosts ({shown})", "return_url")
    return url


async def mint_link(
    service: ManagementService, config: PortalConfig, user_id: str, return_url: str | None
) -> tuple[str, float]:
    """A portal link for ``user_id`` and when it expires; PortalOff, NotFound or InvalidField."""
    if config.port is None:
        raise PortalOff
    if return_url is not None:
        check_return_url(return_url, config.return_url_hosts)
    if (await service.get_user(user_id)).subscription != "active":
        raise PortalClosed(user_id)
    token, expires_at = await service.add_portal_link(user_id, return_url=return_url, ttl=config.link_ttl)
    return f"{config.link_base()}{PORTAL_PREFIX}/start?token={quote(token)}", expires_at
