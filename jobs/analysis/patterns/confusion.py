"""Confusion matrices: counts, row-normalised rates, and the conditional confusion over errors only."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Counts [K,K] int64: row = true class, column = predicted class."""
    return np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k).astype(np.int64)


def row_normalized(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total: P(pred = j | true = i). A class with no samples gets a row of zeros."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def off_diagonal(counts: np.ndarray) -> np.ndarray:
    """A copy with the diagonal (the correct predictions) set to zero: the errors alone."""
    errors = np.array(counts, dtype=counts.dtype)
    np.fill_diagonal(errors, 0)
    return errors


def class_errors(counts: np.ndarray) -> np.ndarray:
    """Misclassified samples per true class [K]."""
    return off_diagonal(counts).sum(axis=1)


def conditional_confusion(counts: np.ndarray) -> np.ndarray:
    """P(pred = j | true = i, pred != i) [K,K], zero diagonal; a class with no errors gets a row of zeros."""
    return row_normalized(off_diagonal(counts))
