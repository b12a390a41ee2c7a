"""How much a key may call: the limiter (``limiter``), the limits shared through Redis (``shared``,
``redis_state``), and the rate-limit headers (``headers``)."""
