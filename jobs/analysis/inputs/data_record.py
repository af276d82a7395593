"""The report's `data` record: what the analysis ran on, built here for every input path."""

from __future__ import annotations


def data_record(ran: str, n: int, *, path: str | None = None, split_size: int | None = None,
                validation_n: int | None = None, **provenance: object) -> dict:
    """`data` of metrics.json: the dataset's `path` and test split (`split_size` images, `n` of them run; None
    for predictions files, which carry no dataset), the validation images the policy is fitted on, `provenance`
    (predictions files, repository and models, result files...) and a description in words that starts with
    `ran`, what ran on the images."""
    if path is None:
        return {**provenance, "n": n, "description": f"{ran}, {n} samples each, on the same split."}
    record = {"path": path, "split": "test", "n": n, "split_size": split_size, **provenance}
    description = f"{ran} on {n} of the {split_size} images of the test split of `{path}`."
    if validation_n is not None:
        record["validation_n"] = validation_n
        description += f" The correction policy is fitted on {validation_n} validation-split images."
    return {**record, "description": description}
