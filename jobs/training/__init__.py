"""Training jobs: data, the model zoo, training, checkpoints, evaluation and export."""
