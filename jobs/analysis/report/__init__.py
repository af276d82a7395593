"""The report directory: metrics.json, report.md and report.html, figures and networks, rendered from the
analysis's results and written all or nothing."""
