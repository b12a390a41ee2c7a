"""Running the gateway: serving processes, the workers of ``serve --workers N``, stop signals."""
