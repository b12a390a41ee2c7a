"""Which rate-limit windows a request is charged to (``rate_limits``): its key's, its user's over
all the user's keys, and those of every route it is on (``rate_limits.routes``), each enforced or
only observed (``rate_limits.observe``, a route's ``mode``)."""

from __future__ import annotations

from gateway.auth.verdicts import Identity
from gateway.config import RateLimitsConfig
from gateway.ratelimit.limiter import KEY, USER, Charge
from gateway.routes import matches, normalized_path

__all__ = ["ChargePlan"]


class ChargePlan:
    def __init__(self, config: RateLimitsConfig) -> None:
        self._routes = config.routes
        self._observe_key = KEY in config.observe
        self._observe_user = USER in config.observe
        self._key_alone = not self._routes and not self._observe_key

    def charges(self, identity: Identity, method: str, path: str) -> tuple[Charge, ...] | None:
        """The request's charges; None when they are its key's own windows alone, enforced (the
        common case, which ``Limiter.hit`` serves without building any of this)."""
        if self._key_alone and not identity.user_limits:
            return None
        charges = [Charge(KEY, identity.key_id, identity.limits, self._observe_key)]
        if identity.user_limits:
            charges.append(Charge(USER, identity.user_id, identity.user_limits, self._observe_user))
        if self._routes:
            normal = normalized_path(path)
            for route in self._routes:
                if matches(route, method, normal):
                    observe = route.mode == "observe"
                    # Scopes named after the route: its windows are apart from the general ones.
                    if route.per_key:
                        charges.append(Charge(f"{KEY}:{route.name}", identity.key_id, route.per_key, observe))
                    if route.per_user:
                        charges.append(Charge(f"{USER}:{route.name}", identity.user_id, route.per_user, observe))
        return tuple(charges)
