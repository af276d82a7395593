"""Where this analysis departs from Min & Bennett (2020), in words for the report, with the settings it ran."""

from __future__ import annotations

from miscause.jobs.analysis.erasure.fills import fill_name
from miscause.jobs.analysis.pipeline import Results


def deviations(results: Results) -> list[str]:
    """One item per departure: what the paper does, what this run did, and why."""
    analysis, erasure, data = results.analysis, results.erasure, results.data
    o = analysis.options
    items = [
        "Models: the paper compares six architectures (VGG16, ResNet50, GoogLeNet, DenseNet161, MobileNet V2, "
        f"Inception V3) trained on CIFAR-10; this report compares {', '.join(analysis.models)}."
        + (" Replicate groups (models of one architecture trained with other seeds) calibrate the comparison; "
           "shared and particular are counted over architectures, not seeds." if o.groups else ""),
    ]
    if data.get("split_size") and data.get("n") and data["n"] < data["split_size"]:
        items.append(f"Data: {data['n']} of the {data['split_size']} test images (a seeded random subset), to fit "
                     "the compute at hand; fewer images mean less power, which the smallest detectable difference "
                     "per pair states.")
    items += [
        "Shared against particular confusions: the paper reads them from the misclassification networks, a "
        "confusion in every model's network being shared and one in few networks particular. Here each edge is "
        f"tested against a no-structure binomial baseline ({o.correction} correction, level {o.alpha}, at least "
        f"{o.min_count} errors); a confusion counts as particular only where the share of the class's errors it "
        "takes differs between architectures beyond seed-to-seed variation (quasi-binomial F test), and as shared "
        f"only where an equivalence test shows every architecture's share within {o.margin} of every other's"
        + ("" if o.groups else " (neither was tested here: no replicate groups, so the comparison is not "
                               "calibrated by seed replicates)")
        + ": an edge present in one network and absent from another can be sampling noise, and a failure to "
        "find a difference is not sameness.",
    ]
    if erasure is not None:
        s = erasure.study.erasure
        items += [
            f"Erasure: boxes of {s.box} x {s.box} pixels around each of the top {s.top_percent}% pixels of "
            f"the `{s.saliency_method}` saliency map of the predicted class, filled with {fill_name(s.fill)} in "
            "normalised units (the dataset mean). The anchor share follows the paper's top 5% by default; the box "
            "size, the fill and the saliency method are this project's choices (options of `miscause analyze`), "
            "and the sweep over them shows how much the result depends on them. The saliency is taken of the "
            "predicted class because a served model does not know the true one; the dataset mean as fill "
            "removes the pixels' content without adding a colour the training images lack.",
            "Verification: the paper shows that erasure corrects errors; here erasure at the salient pixels is "
            f"compared with the `{erasure.study.control}` control on the same images (a one-sided sign-flip "
            f"permutation test of the paired differences, the control's draws averaged per image, {o.correction} "
            "correction over each model's significant edges), since any erasure changes some answers; and the primary "
            "endpoint asks whether it changes errors more than correct answers (specificity).",
            "Interaction of the two causes, which the paper leaves to future work: the correction rates of "
            "non-essential and morphological errors compared with an exact one-sided Fisher test per model.",
            "Correction policy: not part of the paper; chosen by nested cross-validation only on images the model "
            "did not train on (the validation split, or the test split cross-fitted), applied only where its "
            "expected gain's 95% interval lies above zero, and reported beside erasing every image.",
        ]
    return items
