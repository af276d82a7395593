"""miscause.benchmarks."""
