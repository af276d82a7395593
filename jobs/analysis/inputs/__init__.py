"""What the analysis reads: predictions files, study result files, a repository's models, a dataset's images."""
