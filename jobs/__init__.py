"""miscause.jobs."""
