"""The operator console: the admin listener's pages for people, at ``/console/``.

Signed into with an admin token (``signing``), kept by a session (``sessions``); each page a module
(``overview``, ``users``, ``keys``, ``audit``) on what they share (``web``), drawn from Jinja2
templates with server-side SVG charts (``charts``), every answer with the security headers
(``headers``). ``app`` puts it together for the admin app."""
