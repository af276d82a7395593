"""miscause.server."""
