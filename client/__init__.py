"""miscause.client."""
