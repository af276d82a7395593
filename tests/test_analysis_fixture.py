"""metrics.json of three fixed toy analyses, one per input path, against the copies kept in tests/fixtures/:
every key and every value (floats to 1e-4 relative) must be what it was when the copies were made. The models'
float32 outputs round differently on different CPUs (oneDNN picks its kernels by instruction set), which moves
statistics made from small differences of them, such as the curves' areas, by up to about 2e-5 relative.

What varies between runs and machines is left out: the creation time, package versions and the temporary
folder (written `<root>`). The command line is compared as its options, whatever their order. Set
MISCAUSE_WRITE_FIXTURES=1 to write the copies afresh (only when a change of the numbers is intended).
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
from test_analysis_erasure import write_images, write_model
from test_analysis_inputs import write as write_predictions

from miscause.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
VOLATILE = ("created", "versions")
CLASSES = ("cat", "dog", "ship")
N = 300


def scrubbed(value: object, root: str) -> object:
    """`value` without the volatile keys, the temporary folder written `<root>`."""
    if isinstance(value, dict):
        return {key: scrubbed(item, root) for key, item in value.items() if key not in VOLATILE}
    if isinstance(value, list):
        return [scrubbed(item, root) for item in value]
    if isinstance(value, str):
        return value.replace(root, "<root>")
    return value


def options(command: str) -> dict[str, list[str]]:
    """A command line as {option: its values}: the same rerun whatever the options' order."""
    spelt: dict[str, list[str]] = {}
    key = ""
    for word in shlex.split(command):
        if word.startswith("--"):
            key = word
            spelt.setdefault(key, [])
        else:
            spelt.setdefault(key, []).append(word)
    return spelt


def assert_same(actual: object, expected: object, where: str = "metrics") -> None:
    """Key for key (a JSON object's order means nothing) and value for value; floats to 1e-4 relative (or 1e-12
    absolute)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert sorted(actual) == sorted(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for n, (mine, theirs) in enumerate(zip(actual, expected, strict=True)):
            assert_same(mine, theirs, f"{where}[{n}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert actual == pytest.approx(expected, rel=1e-4, abs=1e-12), where
    else:
        assert actual == expected and type(actual) is type(expected), f"{where}: {actual!r} != {expected!r}"


def check(out: Path, root: Path, name: str) -> None:
    """Compare `out/metrics.json` with the kept copy `name` (or write it, when asked to)."""
    metrics = scrubbed(json.loads((out / "metrics.json").read_text()), str(root))
    kept = FIXTURES / name
    if os.environ.get("MISCAUSE_WRITE_FIXTURES"):
        kept.parent.mkdir(exist_ok=True)
        kept.write_text(json.dumps(metrics, indent=1, sort_keys=False) + "\n")
    expected = json.loads(kept.read_text())
    assert options(metrics.pop("command")) == options(expected.pop("command"))
    assert_same(metrics, expected)


def test_repository_analysis_with_erasure_is_unchanged(tmp_path: Path) -> None:
    """Two seeded toy models (one cross-fitted: it trained on trainval) on seeded images, every part on."""
    write_images(tmp_path / "data", {"train": 12, "test": 10}, seed=3)
    for name, seed, tta in (("tiny_a", 0, "none"), ("tiny_b", 1, "flip")):
        write_model(tmp_path / "repo", name, seed, tta)
    out = tmp_path / "report"
    assert main(["analyze", "--repository", str(tmp_path / "repo"), "--data", str(tmp_path / "data"), "--erasure",
                 "--out", str(out), "--sweep-top-percent", "5", "20", "--sweep-box", "1", "3",
                 "--sweep-fill", "mean", "blur", "--control-draws", "3", "--curve-images", "6", "--curve-steps", "4",
                 "--curve-methods",
                 "gradient", "--randomisation-images", "4", "--examples", "2", "--batch-size", "16",
                 "--min-count", "2", "--policy-min-gain", "1", "--device", "cpu", "--no-progress",
                 "--no-policy"]) == 0
    check(out, tmp_path, "metrics-repository.json")


def write_result_file(path: Path, arch: str, seed: int) -> None:
    """A study result file (format version 4) of planted runs: three anchors, a fill sweep, the drawn controls and
    their geometry, a further method, curves and the randomisation check, written from its documented layout."""
    rng = np.random.default_rng(seed)
    settings = [(5.0, 3), (20.0, 3)]
    arrays: dict[str, np.ndarray] = {"settings": np.asarray(settings, dtype=np.float64)}
    k = len(CLASSES)
    for split in ("val", "test"):
        labels = np.arange(N) % k
        # mostly i -> i+1; net_c alone confuses cat with ship (i -> i+2) instead
        step = np.where((labels == 0) & (arch == "net_c"), 2, 1)
        predicted = np.where(rng.random(N) < 0.35, (labels + step + (rng.random(N) < 0.15)) % 3, labels)
        logits = rng.normal(0, 0.5, (N, k)).astype(np.float32)
        logits[np.arange(N), predicted] += rng.uniform(0.2, 3, N).astype(np.float32)

        def code(fix: float, shape: tuple[int, ...], labels=labels, predicted=predicted) -> np.ndarray:
            """Classes after an erasure that fixes with probability `fix`, as the file's CODE."""
            after = np.where(rng.random(shape) < fix, labels, predicted)
            after = np.where(rng.random(shape) < 0.1, (after + 1) % k, after)
            return ((after - predicted) % k).astype(np.int8)

        arrays.update({f"{split}/positions": np.arange(N, dtype=np.int64), f"{split}/labels": labels,
                       f"{split}/logits": logits})
        for anchor, fix in (("saliency", 0.5), ("random", 0.3), ("matched", 0.35)):
            arrays[f"{split}/after/{anchor}"] = code(fix, (2, N))
            for fill in ("mean", "blur"):
                arrays[f"{split}/fill/{fill}/{anchor}"] = code(fix, (N,))
            if split == "test":
                arrays[f"test/pixels/{anchor}"] = rng.integers(40, 300, (2, N)).astype(np.uint16)
        if split == "test":
            for control, fix in (("matched", 0.35), ("shifted", 0.3)):
                count = np.where(rng.random(N) < (0.7 if control == "shifted" else 1), 10, 0)
                corrected = rng.binomial(count, np.where(predicted == labels, 0.9, fix))
                changed = np.minimum(count, np.where(predicted == labels, count - corrected,
                                                     corrected + rng.binomial(count - corrected, 0.1)))
                arrays.update({f"test/draws/{control}/count": count.astype(np.uint8),
                               f"test/draws/{control}/corrected": corrected.astype(np.uint8),
                               f"test/draws/{control}/changed": changed.astype(np.uint8)})
            for anchor in ("saliency", "random", "matched"):
                arrays[f"test/geometry/{anchor}"] = np.stack([rng.integers(40, 300, N), rng.random(N),
                                                              rng.random(N)]).astype(np.float16)
            # the shifted mask: the saliency mask's pixels, never inside it; none where no offset avoids it
            shifted = np.stack([arrays["test/geometry/saliency"][0], rng.random(N), np.zeros(N)])
            shifted[:, arrays["test/draws/shifted/count"] == 0] = np.nan
            arrays["test/geometry/shifted"] = shifted.astype(np.float16)
            for anchor, fix in (("saliency", 0.45), ("matched", 0.35)):
                arrays[f"test/method/integrated_gradients/{anchor}"] = code(fix, (2, N))
                for fill in ("mean", "blur"):
                    arrays[f"test/method/integrated_gradients/fill/{fill}/{anchor}"] = code(fix, (N,))
    arrays["curves/rows"] = np.arange(0, N, 30, dtype=np.int64)
    for order in ("gradient", "random"):
        for mode in ("deletion", "insertion"):
            arrays[f"curves/{order}/{mode}"] = rng.random((10, 5)).astype(np.float32)
    arrays["randomisation/rows"] = np.arange(6, dtype=np.int64)
    arrays["randomisation/gradient/spearman"] = rng.uniform(-0.2, 0.6, (2, 6)).astype(np.float32)
    arrays["randomisation/gradient/ssim"] = rng.uniform(0.0, 0.5, (2, 6)).astype(np.float32)
    arrays["randomisation/gradient/maps"] = rng.random((6, 8, 8)).astype(np.float16)
    arrays.update({"examples/rows": np.zeros(0, np.int64), "examples/after": np.zeros(0, np.int64),
                   "examples/image": np.zeros((0, 32, 32, 3), np.uint8),
                   "examples/saliency": np.zeros((0, 32, 32), np.float32),
                   "examples/erased": np.zeros((0, 32, 32, 3), np.uint8),
                   "examples/mask": np.zeros((0, 32, 32), bool)})
    erasure = {"top_percent": 5.0, "box": 3, "sweep_top_percent": [5.0, 20.0], "sweep_box": [3], "fill": None,
               "saliency_method": "gradient", "batch_size": 256, "seed": 0, "sweep_fill": ["mean", "blur"],
               "sweep_methods": ["gradient", "integrated_gradients"], "control_draws": 10,
               "curve_methods": ["gradient"], "curve_steps": 4, "curve_images": 10, "insertion_canvas": "blur"}
    meta = {"format_version": 4, "arch": arch, "model": arch, "classes": list(CLASSES),
            "mean": [0.5] * 3, "std": [0.25] * 3,
            "training": {"split": "train"}, "erasure": erasure,
            "anchors": {"saliency": {}, "random": {}, "matched": {}, "shifted": {}},
            "data": {"path": "data", "test_size": N, "val_size": N}, "device": "cpu",
            "fill_sweep": {"setting": [5.0, 3], "fills": ["mean", "blur"]}, "methods": ["integrated_gradients"],
            "draws": 10, "draw_setting": [5.0, 3], "curves": {"orders": ["gradient", "random"], "steps": 4},
            "randomisation": {"methods": ["gradient"], "seed": 0, "layers": ["head", "conv"]}}
    np.savez_compressed(path, meta=np.asarray(json.dumps(meta)), **arrays)


def without_sweep(path: Path, seed: int, **erasure: object) -> None:
    """Rewrite a planted result file as a stage off the design's sweep seeds writes it: the primary setting only,
    no fill sweep, further method or curves, its own seed (and any further `erasure` options)."""
    with np.load(path) as stored:
        arrays = {key: stored[key] for key in stored.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["erasure"].update(seed=seed, sweep_top_percent=[5.0], sweep_fill=[], sweep_methods=["gradient"],
                           curve_images=0, **erasure)
    meta.update(fill_sweep=None, methods=[], curves=None)
    kept = {key: value[:1] if key.startswith(("val/after/", "test/after/", "test/pixels/", "settings")) else value
            for key, value in arrays.items()
            if not key.startswith(("curves/", "test/method/")) and "/fill/" not in key}
    np.savez_compressed(path, meta=np.asarray(json.dumps(meta)), **kept)


def test_a_sweep_seed_and_a_plain_seed_make_one_report_and_other_primary_options_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = [tmp_path / "net_a.npz", tmp_path / "net_b.npz"]
    for seed, path in enumerate(files):
        write_result_file(path, path.stem, seed)
    without_sweep(files[1], seed=1)
    out = tmp_path / "report"
    argv = ["analyze", "--results", *map(str, files), "--min-count", "2", "--policy-min-gain", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    made = json.loads((out / "metrics.json").read_text())
    stages = made["data"]["stages"]
    assert (stages["net_a"]["seed"], stages["net_b"]["seed"]) == (0, 1)
    assert (stages["net_a"]["sweep_top_percent"], stages["net_b"]["sweep_top_percent"]) == ([5.0, 20.0], [5.0])
    assert made["settings"]["erasure"]["sweep_top_percent"] == [5.0, 20.0]
    assert [s["top_percent"] for s in made["erasure"]["net_a"]["settings"]] == [5.0, 20.0]
    assert [s["top_percent"] for s in made["erasure"]["net_b"]["settings"]] == [5.0]
    assert {name: e["primary"]["correction"]["images"] for name, e in made["endpoints"].items()} == {
        name: made["models"][name]["errors"] for name in ("net_a", "net_b")}
    without_sweep(files[1], seed=1, control_draws=5)
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    error = capsys.readouterr().err
    assert "erasure options differ" in error and "control_draws 5 against 10" in error and error.count("\n") == 1
    assert not (tmp_path / "refused").exists()


def test_result_file_analysis_is_unchanged(tmp_path: Path) -> None:
    archs = ("net_a", "net_b", "net_c", "net_d")
    for seed, arch in enumerate(archs):
        write_result_file(tmp_path / f"{arch}.npz", arch, seed)
    out = tmp_path / "report"
    assert main(["analyze", "--results", *(str(tmp_path / f"{a}.npz") for a in archs),
                 "--out", str(out), "--min-count", "2", "--policy-min-gain", "1", "--control", "shifted",
                 "--replicates", "net=net_a,net_b", "--replicates", "odd=net_c,net_d"]) == 0
    check(out, tmp_path, "metrics-results.json")


def test_predictions_analysis_is_unchanged(tmp_path: Path) -> None:
    paths = [str(write_predictions(tmp_path / f"m{seed}.npz", n=240, seed=seed)) for seed in range(3)]
    out = tmp_path / "report"
    assert main(["analyze", "--predictions", *paths, "--out", str(out), "--min-count", "3",
                 "--correction", "bh"]) == 0
    check(out, tmp_path, "metrics-predictions.json")
