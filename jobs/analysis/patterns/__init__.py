"""Misclassification patterns: confusion and similarity, edge significance, where a class's errors go across
architectures (dependence and equivalence against seed replicates, their power), the cause of each class pair,
misclassification networks."""
