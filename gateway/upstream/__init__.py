"""The upstream hop: its contract (``base``), one module per HTTP client, and the chooser (``auto``)."""
