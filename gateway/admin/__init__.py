"""The admin listener: the JSON API (``api``) and its OpenAPI description (``openapi``)."""
