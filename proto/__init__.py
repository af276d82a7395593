"""miscause.proto."""
