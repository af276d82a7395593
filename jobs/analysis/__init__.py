"""Analysis jobs: confusion patterns, misclassification networks, causes, the erasure study, policy fitting, report."""
