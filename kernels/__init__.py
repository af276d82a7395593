"""miscause.kernels."""
