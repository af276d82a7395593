"""Checkpoints: one `torch.save` dict, written atomically, read back with `weights_only=True`."""

from __future__ import annotations

from pathlib import Path

import torch

from miscause.atomic import atomic_path
from miscause.errors import MiscauseError

REQUIRED_KEYS = ("arch", "classes", "mean", "std", "model", "epoch", "recipe")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` to `path` so a kill at any moment leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint; a missing, truncated or foreign file is a `MiscauseError` naming the path."""
    path = Path(path)
    if not path.is_file():
        raise MiscauseError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, zipfile errors...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MiscauseError(f"cannot read checkpoint {path} (truncated or not a checkpoint): {reason}") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise MiscauseError(f"{path} is not a miscause checkpoint: missing {', '.join(missing)}")
    return state


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """The trained model (eval mode, CPU) and its checkpoint dict."""
    from miscause.jobs.training import zoo

    state = load_checkpoint(path)
    model = zoo.build(state["arch"], len(state["classes"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise MiscauseError(f"{path}: weights do not fit {state['arch']} with {len(state['classes'])} classes "
                            f"({first[1].strip() if len(first) > 1 else first[0]})") from None
    return model.eval(), state
