"""miscause: find, explain and correct image misclassifications, and serve the correction."""

__version__ = "0.1.0"
