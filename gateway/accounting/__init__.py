"""What callers did: usage counts and credits (``usage``), the metrics (``metrics``), and the access
log (``access_log``)."""
