"""The admin listener, on FastAPI: the routes (``api``), the models that check requests and answers
and write the OpenAPI document (``models``, ``openapi``), the error envelope (``errors``), the
token (``token``)."""
