"""Misclassification patterns: confusion and similarity, edge significance, model dependence calibrated by seed
replicates, the cause of each class pair, misclassification networks."""
