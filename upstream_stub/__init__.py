"""A stand-in for a product-mockup rendering HTTP API, with test tools under ``/__stub/``.

Used by the gateway's end-to-end tests and benchmarks as the upstream behind the proxy. It never imports
``gateway``. See ``upstream_stub.app`` for the endpoint contracts.
"""
