"""Replicate groups: models of one architecture that differ only in their training seed.

The groups give the dependence test its seed-to-seed variation: a confusion is particular to an architecture only
where the share of errors it takes varies across architectures more than between seeds of one architecture (see
`model_dependence`). Models outside every group are architectures of their own; the test needs at least two
groups, so that the seed-to-seed variation is not one architecture's alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from miscause.errors import MiscauseError

Groups = dict[str, tuple[str, ...]]


def parse_replicates(specs: Iterable[str] | None) -> Groups:
    """`NAME=m1,m2,...` texts -> {NAME: (m1, m2, ...)}; a malformed text, a repeated group, a group of one or a
    model in two groups is a `MiscauseError`."""
    groups: Groups = {}
    for spec in specs or ():
        name, sep, members = spec.partition("=")
        models = tuple(m.strip() for m in members.split(",") if m.strip())
        if not sep or not name.strip():
            raise MiscauseError(f"--replicates {spec!r}: expected NAME=MODEL,MODEL[,...]")
        name = name.strip()
        if name in groups:
            raise MiscauseError(f"--replicates: group {name!r} is given twice")
        if len(models) < 2 or len(set(models)) != len(models):
            raise MiscauseError(f"--replicates {name}: a replicate group needs at least two different models, "
                                f"got {', '.join(models) or 'none'}")
        groups[name] = models
    seen: dict[str, str] = {}
    for name, models in groups.items():
        for model in models:
            if model in seen:
                raise MiscauseError(f"--replicates: model {model!r} is in groups {seen[model]!r} and {name!r}")
            seen[model] = name
    return groups


def check_replicates(groups: Groups, classes: Mapping[str, tuple[str, ...]]) -> None:
    """Groups against the analysed models (name -> class list): unknown models, a group name that is also an
    ungrouped model's, replicates with different class lists, or fewer than two groups (replicated architectures)
    are `MiscauseError`s."""
    if not groups:
        return
    grouped = {model for models in groups.values() for model in models}
    for name, models in groups.items():
        unknown = [m for m in models if m not in classes]
        if unknown:
            raise MiscauseError(f"--replicates {name}: unknown model(s) {', '.join(unknown)}; the models are "
                                f"{', '.join(classes)}")
        if name in classes and name not in grouped:
            raise MiscauseError(f"--replicates {name}: the group's name is also the name of a model outside it")
        differing = [m for m in models if classes[m] != classes[models[0]]]
        if differing:
            raise MiscauseError(f"--replicates {name}: {', '.join(differing)} name other classes than {models[0]}: "
                                "replicates must share the class list")
    if len(groups) < 2:
        raise MiscauseError(f"--replicates: the dependence test needs at least two replicated architectures (two "
                            f"groups of two or more seeds), got {len(groups)} ({', '.join(groups)})")


def architectures(models: list[str], groups: Groups) -> list[str]:
    """The architecture of each model: its group's name, or the model's own name outside every group."""
    group_of = {model: name for name, members in groups.items() for model in members}
    return [group_of.get(model, model) for model in models]
