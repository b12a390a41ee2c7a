"""The public listener's request path: the HTTP protocol (``protocol``), the app and its lifespan
(``app``), the forwarding (``proxy``), and what it is made of: the header rules (``headers``),
request ids (``request_id``) and request bodies (``request_body``)."""
