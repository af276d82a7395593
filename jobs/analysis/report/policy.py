"""The report's section on the correction policy: how it was chosen, its expected and realised gain (rendering
only: every number comes from the policy document)."""

from __future__ import annotations

from miscause.jobs.analysis.erasure.policy_selection import FOLDS, KEEP_LEVEL
from miscause.jobs.analysis.pipeline import ErasureResults
from miscause.jobs.analysis.report.document import Block
from miscause.jobs.analysis.report.statistics import percent

INTRO = (
    "Chosen only on images the model never trained on (the validation split for a model trained on the `train` "
    "split, otherwise the test split), by nested cross-validation: {folds} inner folds fit each erasure setting's "
    "per-class confidence thresholds on the other inner folds, a class keeps its rule only where it corrected "
    "significantly more held-out images than it broke (exact one-sided McNemar test, level {level}), and the "
    "setting whose kept rules gained most is chosen; {folds} outer folds run that whole selection without the fold "
    "they score, which gives the gain expected of it, with a 95% bootstrap interval over images. The policy "
    "corrects only where that interval lies above zero; otherwise it has no rule and the service never changes a "
    "label. The realised gain is the written policy's on the test split, measured once. For an image predicted as "
    "class c with maximum softmax probability q, the service answers with the erased image's class when the "
    "policy has a rule for c and q <= its max_confidence. Beside it: the accuracy with every image erased at the "
    "policy's setting, and the break-even error share b / (b + c) (c: share of errors that erasure corrects, b: "
    "share of correct answers it breaks), the share of errors a gate's selected images must hold for erasing them "
    "to gain."
)


def points(gain: dict) -> str:
    """A net change with its interval, in accuracy points, and the images behind it."""
    low, high = gain["ci95"]
    return (f"{100 * gain['net_change']:+.2f} points, 95% CI [{100 * low:+.2f}, {100 * high:+.2f}] "
            f"({gain['corrected']} corrected, {gain['broken']} broken of {gain['n']})")


def rules_text(rules: list[dict]) -> str:
    return ", ".join(f"{r['pred']} <= {r['max_confidence']:.3f}" for r in rules) or "none"


def fitted_text(policy: dict) -> str:
    """Where the policy was chosen and, for a cross-fitted one, why."""
    fitted = policy["fitted_on"]
    if fitted.get("method") == "cross-fit":
        return (f"chosen on the test split ({fitted['reason']}): its expected gain is the cross-fitted one, and no "
                "separate realised gain can be measured")
    return f"chosen on the validation split ({fitted['n']} images)"


def realised_text(policy: dict) -> list[str]:
    """The written policy on the test split, and what withheld rules would have done there."""
    test = policy["test"]
    if test["method"] == "cross-fit":
        return [f"test (cross-fitted, the expected gain above): accuracy {percent(test['accuracy_before'])} -> "
                f"{percent(test['accuracy_after'])}"]
    lines = [f"realised gain on the test split: {points(test)}; accuracy {percent(test['accuracy_before'])} -> "
             f"{percent(test['accuracy_after'])}"]
    if "withheld" in test:
        lines.append(f"the withheld rules on the test split would have changed it by {points(test['withheld'])}")
    return lines


def policy_blocks(erasure: ErasureResults, paths: dict[str, str], accuracy: dict[str, float]) -> list[Block]:
    """The section: the procedure in words, then per model its choice, decision and gains."""
    blocks: list[Block] = [("h2", "Correction policy"), ("p", INTRO.format(folds=FOLDS, level=KEEP_LEVEL))]
    for name, policy in erasure.policies.items():
        test, selection = policy["test"], policy["selection"]
        chosen, break_even = selection["chosen"], test.get("break_even_error_share")
        blocks += [
            ("h3", name),
            ("list", [f"validation accuracy {percent(policy['fitted_on']['accuracy'])}, test accuracy "
                      f"{percent(accuracy[name])}; {fitted_text(policy)}",
                      f"expected gain (nested cross-validation on the {selection['expected']['split']} split): "
                      f"{points(selection['expected'])}",
                      f"chosen: p = {chosen['top_percent']}, b = {chosen['box']}; rules: "
                      f"{rules_text(chosen['rules'])}; "
                      f"net gain {chosen['net_gain']} images in-sample, {chosen['held_out_gain']} on the inner "
                      "held-out folds",
                      selection["reason"],
                      f"written: p = {policy['top_percent']}, b = {policy['box']}; rules: "
                      f"{rules_text(policy['rules'])}",
                      *realised_text(policy),
                      f"with every image erased: accuracy {percent(test['accuracy_blanket'])}; erasure corrects "
                      f"{percent(test['blanket_corrected_rate'])} of errors and breaks "
                      f"{percent(test['blanket_broken_rate'])} of correct answers: "
                      + (f"a gate gains only where more than {percent(break_even)} of the images it selects are "
                         f"errors (the model errs on {percent(1 - test['accuracy_before'])} of all images)"
                         if break_even is not None else "no gate can gain"),
                      f"written to `{paths.get(name, 'not written')}`"]),
        ]
    return blocks
