"""The runner-up baseline: does erasure correct an error, or only flip it to the model's second choice?

Erasing the evidence for the predicted class tends to hand the answer to the runner-up (the class of the
second-largest logit), which for many errors is the true class whatever caused the error. These counts tell
the two apart: how often the erased class is the runner-up, the correction rate among errors whose runner-up
is the true class and among the others, and what the rule "answer the runner-up" would do, on every image and
on the images the erasure changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class RuleOutcomes:
    """What answering another class (the runner-up) on some images does: on how many it was `applied`, how many
    errors it corrected and how many correct answers it broke."""

    applied: int
    corrected: int
    broken: int


@dataclass(frozen=True, kw_only=True)
class GroupCorrection:
    """The errors of one group (those whose runner-up is the true class, or the others), how many of them an
    erasure corrected, and that share (0 without errors)."""

    errors: int
    corrected: int
    corrected_rate: float


@dataclass(frozen=True, kw_only=True)
class RunnerUpOutcomes:
    """One erasure against the runner-up: errors it changed, how many to the runner-up, the correction by whether
    the runner-up is true, and the runner-up rule on the images the erasure changed."""

    to_runner_up: int
    changed: int
    to_runner_up_rate: float
    runner_up_true: GroupCorrection
    runner_up_other: GroupCorrection
    runner_up_on_changed: RuleOutcomes


@dataclass(frozen=True, kw_only=True)
class Oracle(RuleOutcomes):
    """The rule "answer the runner-up" on every image, with the errors and correct answers it applies to."""

    errors: int
    corrected_rate: float
    correct: int
    broken_rate: float


def runner_up(logits: np.ndarray) -> np.ndarray:
    """Each row's class of the second-largest logit (the largest is argmax's, first on ties)."""
    others = logits.astype(np.float64, copy=True)
    others[np.arange(len(logits)), logits.argmax(axis=1)] = -np.inf
    return others.argmax(axis=1)


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def rule_outcomes(labels: np.ndarray, before: np.ndarray, after: np.ndarray, applied: np.ndarray) -> RuleOutcomes:
    """What answering `after` instead of `before` on the `applied` images does: errors corrected, correct broken."""
    wrong = before != labels
    return RuleOutcomes(applied=int(applied.sum()), corrected=int((applied & wrong & (after == labels)).sum()),
                        broken=int((applied & ~wrong & (after != labels)).sum()))


def _group(members: np.ndarray, after: np.ndarray, labels: np.ndarray) -> GroupCorrection:
    corrected = int((members & (after == labels)).sum())
    return GroupCorrection(errors=int(members.sum()), corrected=corrected,
                           corrected_rate=_rate(corrected, int(members.sum())))


def runner_up_outcomes(labels: np.ndarray, before: np.ndarray, second: np.ndarray,
                       after: np.ndarray) -> RunnerUpOutcomes:
    """One erasure against the runner-up: among the errors, how many went to the runner-up and the correction
    rate split by whether the runner-up is the true class; and the runner-up rule on the images it changed."""
    wrong = before != labels
    changed = wrong & (after != before)
    to_second = int((wrong & (after == second)).sum())
    return RunnerUpOutcomes(to_runner_up=to_second, changed=int(changed.sum()),
                            to_runner_up_rate=_rate(to_second, int(changed.sum())),
                            runner_up_true=_group(wrong & (second == labels), after, labels),
                            runner_up_other=_group(wrong & (second != labels), after, labels),
                            runner_up_on_changed=rule_outcomes(labels, before, second, after != before))


def oracle(labels: np.ndarray, before: np.ndarray, second: np.ndarray) -> Oracle:
    """The rule "answer the runner-up" on every image: it corrects exactly the errors whose runner-up is true and
    breaks every correct answer."""
    wrong = before != labels
    result = rule_outcomes(labels, before, second, np.ones_like(wrong))
    return Oracle(applied=result.applied, corrected=result.corrected, broken=result.broken, errors=int(wrong.sum()),
                  corrected_rate=_rate(result.corrected, int(wrong.sum())), correct=int((~wrong).sum()),
                  broken_rate=_rate(result.broken, int((~wrong).sum())))
