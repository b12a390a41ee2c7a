"""Who is calling: the key format (``keys``), the verifier and its cache (``verify``), and the
throttle of look-ups of unknown keys (``throttle``)."""
