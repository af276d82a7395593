"""The saliency checks as published: the cascading model randomisation on a toy CNN (top down, cumulative,
batch-normalisation statistics reset, constant maps counted, the seed-to-seed reference), the deletion and
insertion areas against the random order on planted curves, the result file's arrays, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_analysis_controls import result_meta, result_run
from test_analysis_erasure import workspace, write_model  # noqa: F401
from torch import nn

from miscause import kernels
from miscause.cli import main
from miscause.jobs.analysis.erasure.collect import ModelRuns
from miscause.jobs.analysis.erasure.curves import (
    BETTER,
    NOT_SHOWN,
    WORSE,
    Curves,
    against_random,
    area,
    summarize_curves,
)
from miscause.jobs.analysis.erasure.randomisation import (
    CHECK_SEED,
    REFERENCE_IMAGES,
    Randomisation,
    cascade_check,
    cascade_layers,
    randomisation_summaries,
    randomise_layer,
    rank_correlations,
    structural_similarities,
)
from miscause.jobs.analysis.erasure.run import ErasureOptions
from miscause.jobs.analysis.inputs.results import load_results, write_results


class Toy(nn.Module):
    """Three convolutions (two with batch normalisation, planted running statistics) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.norm2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, 3)
        with torch.no_grad():
            for norm in (self.norm1, self.norm2):
                norm.running_mean.fill_(0.3)
                norm.running_var.fill_(2.0)
                norm.weight.fill_(1.5)
                norm.bias.fill_(-0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.norm1(self.conv1(x)))
        x = nn.functional.max_pool2d(nn.functional.gelu(self.norm2(self.conv2(x))), 2)
        x = nn.functional.max_pool2d(nn.functional.gelu(self.conv3(x)), 2)
        return self.head(x.flatten(1))


@pytest.fixture
def toy() -> Toy:
    torch.manual_seed(0)
    return Toy().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_layers_run_from_the_logits_down_each_with_its_normalisation(toy: Toy) -> None:
    layers = cascade_layers(toy)
    assert [layer.name for layer in layers] == ["head", "conv3", "conv2", "conv1"]
    assert [layer.normalisations for layer in layers] == [(), (), (toy.norm2,), (toy.norm1,)]


def test_layers_of_one_block_are_randomised_together() -> None:
    def stage(channels: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))

    network = nn.Sequential()
    network.add_module("features", nn.Sequential(stage(3), stage(4)))
    network.add_module("fc", nn.Linear(4, 2))
    layers = cascade_layers(nn.Sequential(network))  # a wrapper's prefix is not part of the names
    assert [layer.name for layer in layers] == ["fc", "features.1", "features.0"]
    first = network.features[0]
    assert layers[2].weights == (first[0], first[2]) and layers[2].normalisations == (first[1],)
    generator = torch.Generator().manual_seed(0)
    randomise_layer(layers[2], generator)
    assert (first[0].weight.abs() <= 1 / np.sqrt(3 * 9)).all() and (first[2].weight.abs() <= 1 / np.sqrt(4)).all()
    assert (first[1].running_var == 1).all() and (network.features[1][1].running_var == 1).all()


def test_the_cascade_randomises_one_more_layer_per_step_and_resets_the_statistics(toy: Toy,
                                                                                images: torch.Tensor) -> None:
    trained = {name: tensor.clone() for name, tensor in toy.state_dict().items()}
    seen = []

    def record(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        seen.append({name: tensor.clone() for name, tensor in model.state_dict().items()})
        return kernels.saliency(model, x, "gradient", classes)[0]

    cascade_check(toy, images, record, seed=3)
    assert len(seen) == 5  # the trained maps, then one map per step
    order = ["head", "conv3", "conv2", "conv1"]
    for step, state in enumerate(seen):
        for position, layer in enumerate(order):
            changed = not torch.equal(state[f"{layer}.weight"], trained[f"{layer}.weight"])
            assert changed == (position < step), (step, layer)
    for norm, conv_step in (("norm2", 3), ("norm1", 4)):
        for step, state in enumerate(seen):
            reset = step >= conv_step
            for key, value in (("running_mean", 0.0), ("running_var", 1.0), ("weight", 1.0), ("bias", 0.0)):
                expected = torch.full_like(trained[f"{norm}.{key}"], value) if reset else trained[f"{norm}.{key}"]
                torch.testing.assert_close(state[f"{norm}.{key}"], expected)
    for name, tensor in toy.state_dict().items():
        torch.testing.assert_close(tensor, trained[name], msg=f"{name} restored")


def test_similarity_falls_as_more_layers_are_randomised(toy: Toy, images: torch.Tensor) -> None:
    trained = kernels.saliency(toy, images, "gradient")[0]
    np.testing.assert_allclose(rank_correlations(trained, trained), 1.0)  # no layer randomised
    np.testing.assert_allclose(structural_similarities(trained, trained), 1.0)
    scores = cascade_check(toy, images, "gradient", seed=0)
    assert scores.spearman.shape == scores.ssim.shape == (4, 24)
    for values in (scores.spearman, scores.ssim):
        means = values.mean(axis=1)
        assert (means < 0.5).all() and means[-1] < means[0] - 0.05, means
        assert (np.abs(np.diff(values, axis=0)) > 0).any(axis=1).all(), "every step changes the maps"
    again = cascade_check(toy, images, "gradient", seed=0)
    np.testing.assert_array_equal(again.spearman, scores.spearman)


def test_a_map_that_ignores_the_model_survives_every_step(toy: Toy, images: torch.Tensor) -> None:
    def intensity(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return x.abs().amax(dim=1)

    scores = cascade_check(toy, images, intensity)
    np.testing.assert_allclose(scores.spearman, 1.0, atol=1e-12)
    np.testing.assert_allclose(scores.ssim, 1.0, atol=1e-12)


def test_constant_maps_are_counted_not_dropped(toy: Toy, images: torch.Tensor) -> None:
    def half_constant(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        maps = kernels.saliency(model, x, "gradient", classes)[0]
        maps[::2] = 0.5
        return maps

    scores = cascade_check(toy, images, half_constant)
    assert np.isnan(scores.spearman[:, ::2]).all() and np.isnan(scores.ssim[:, ::2]).all()
    assert np.isfinite(scores.spearman[:, 1::2]).all() and np.isfinite(scores.ssim[:, 1::2]).all()
    check = Randomisation(rows=np.arange(24), seed=0, layers=("head", "conv3", "conv2", "conv1"),
                          spearman={"gradient": scores.spearman}, ssim={"gradient": scores.ssim},
                          maps={"gradient": scores.trained[:REFERENCE_IMAGES].astype(np.float16)})
    summary = randomisation_summaries({"toy": check, "other": None})["toy"]
    for step in summary.methods["gradient"].steps:
        for measure in ("spearman", "ssim"):
            similarity = step.similarity[measure]
            assert similarity.images == 24 and similarity.undefined == 12
            low, high = similarity.ci95
            assert low < similarity.mean < high
    assert summary.reference_models == () and summary.methods["gradient"].reference is None


def planted_check(maps: np.ndarray, spearman: float, seed: int) -> Randomisation:
    """A check whose steps score about `spearman` (and as much SSIM) on 32 images, with the given trained maps."""
    rng = np.random.default_rng(seed)
    scores = np.clip(spearman + rng.normal(0, 0.05, (2, 32)), -1, 1).astype(np.float32)
    return Randomisation(rows=np.arange(32), seed=0, layers=("head", "conv"), spearman={"gradient": scores},
                         ssim={"gradient": scores.copy()}, maps={"gradient": maps})


def test_the_reference_is_another_trained_seed_on_the_same_images() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((REFERENCE_IMAGES, 8, 8)).astype(np.float16)
    close = np.clip(maps + rng.normal(0, 0.01, maps.shape), 0, None).astype(np.float16)
    checks = {"a_s0": planted_check(maps, 0.2, 1), "a_s1": planted_check(close, 0.2, 2),
              "b": planted_check(maps, 0.2, 3)}
    summaries = randomisation_summaries(checks, (("a", ("a_s0", "a_s1")),))
    assert summaries["b"].reference_models == () and summaries["b"].methods["gradient"].reference is None
    assert summaries["b"].methods["gradient"].steps[0].below_reference is None
    first = summaries["a_s0"]
    assert first.reference_models == ("a_s1",) and first.reference_images == REFERENCE_IMAGES
    cascade = first.methods["gradient"]
    assert cascade.reference["spearman"].mean > 0.95 and cascade.reference["ssim"].mean > 0.9
    for step in cascade.steps:
        below = step.below_reference["spearman"]
        assert below.images == REFERENCE_IMAGES and below.alternative == "greater"
        assert below.mean > 0.6 and below.p_value < 1e-6 and below.ci95[0] > 0.5


def planted_curves(differences: dict[str, float], images: int = 200) -> Curves:
    """Deletion and insertion curves whose per-image areas differ from the random order's by the planted
    amounts, plus noise."""
    rng = np.random.default_rng(0)
    random = {mode: rng.uniform(0.3, 0.7, (images, 9)) for mode in ("deletion", "insertion")}
    probabilities = {"random": random}
    for method, shift in differences.items():
        probabilities[method] = {mode: values + shift + rng.normal(0, 0.05, (images, 1))
                                 for mode, values in random.items()}
    return Curves(np.arange(images), 8, probabilities)


def test_areas_against_random_cover_the_planted_difference_and_say_where_no_better() -> None:
    planted = {"faithful": -0.1, "backwards": 0.1, "same": 0.0}
    curves = planted_curves(planted)
    summary = summarize_curves(curves, np.zeros(200, bool), "mean", "blur", alpha=0.05)
    for method, shift in planted.items():
        for mode in ("deletion", "insertion"):
            comparison = summary.versus_random[method][mode]
            low, high = comparison.difference.ci95
            assert low < comparison.difference.mean < high and high - low < 0.03
            assert comparison.difference.mean == pytest.approx(shift, abs=0.02), (method, mode, comparison)
            measured = area(curves.probabilities[method][mode]) - area(curves.probabilities["random"][mode])
            assert comparison.difference.mean == pytest.approx(measured.mean())
    verdicts = {method: {mode: c.verdict for mode, c in by_mode.items()}
                for method, by_mode in summary.versus_random.items()}
    assert verdicts["faithful"] == {"deletion": BETTER, "insertion": WORSE}
    assert verdicts["backwards"] == {"deletion": WORSE, "insertion": BETTER}
    assert verdicts["same"] == {"deletion": NOT_SHOWN, "insertion": NOT_SHOWN}
    assert "random" not in summary.versus_random


def test_the_interval_covers_the_planted_difference_about_95_times_in_100() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        random = rng.uniform(0.2, 0.6, 30)
        comparison = against_random(random - 0.05 + rng.normal(0, 0.1, 30), random, "deletion", 0.05)
        low, high = comparison.difference.ci95
        covered += low < -0.05 < high
    assert 0.92 <= covered / 400 <= 0.98, covered


def test_the_result_file_round_trips_the_cascade(tmp_path: Path) -> None:
    runs = {split: result_run(split) for split in ("val", "test")}
    rng = np.random.default_rng(0)
    spearman = rng.uniform(-1, 1, (3, 5)).astype(np.float32)
    spearman[:, 2] = np.nan
    check = Randomisation(rows=np.array([1, 4, 9, 20, 33]), seed=7, layers=("head", "conv2", "conv1"),
                          spearman={"gradient": spearman, "smoothgrad": spearman[::-1].copy()},
                          ssim={"gradient": spearman * 0.5, "smoothgrad": spearman.copy()},
                          maps={m: rng.random((4, 32, 32)).astype(np.float16) for m in ("gradient", "smoothgrad")})
    write_results(tmp_path / "m.npz", result_meta(ErasureOptions(sweep_top_percent=(1.0, 5.0), sweep_box=(1, 3))),
                  ModelRuns(name="m", source="m", training_split="train", test=runs["test"], val=runs["val"],
                            randomisation=check))
    meta, loaded = load_results(tmp_path / "m.npz")
    assert meta["randomisation"] == {"methods": ["gradient", "smoothgrad"], "seed": 7,
                                     "layers": ["head", "conv2", "conv1"]}
    got = loaded.randomisation
    assert got.seed == 7 and got.layers == check.layers
    np.testing.assert_array_equal(got.rows, check.rows)
    for key in ("spearman", "ssim", "maps"):
        for method, values in getattr(check, key).items():
            assert getattr(got, key)[method].dtype == values.dtype
            np.testing.assert_array_equal(getattr(got, key)[method], values)
    with np.load(tmp_path / "m.npz") as data:
        assert sum(data[key].nbytes for key in data.files if key.startswith("randomisation/")) < 40_000


def analyze(workspace: dict, out: Path, *options: str) -> int:  # noqa: F811
    return main(["analyze", "--repository", str(workspace["repo"]), "--data", str(workspace["data"]), "--out",
                 str(out), "--min-count", "2", "--device", "cpu", "--no-progress", "--batch-size", "4", *options])


def test_report_holds_the_cascade_of_every_method_and_the_seed_reference(workspace: dict) -> None:  # noqa: F811
    out = workspace["root"] / "randomisation"
    for name, seed in (("other_a", 5), ("other_b", 6)):  # a second replicated architecture, as --replicates needs
        write_model(workspace["repo"], name, seed, "none")
    assert analyze(workspace, out, "--randomisation-images", "6", "--seed", "3", "--models", "tiny_a", "tiny_b",
                   "other_a", "other_b", "--replicates", "tiny=tiny_a,tiny_b", "--replicates",
                   "other=other_a,other_b") == 0
    metrics = json.loads((out / "metrics.json").read_text())["randomisation"]
    methods = [m for m in kernels.METHODS if m != "grad_cam"]  # the tiny models name no Grad-CAM layer
    for name, other in (("tiny_a", "tiny_b"), ("tiny_b", "tiny_a")):
        record = metrics[name]
        # the check's own seed, not the analysis's --seed: every model is checked on the same images and weights
        assert record["images"] == 6 and record["seed"] == CHECK_SEED != 3 and list(record["methods"]) == methods
        assert record["reference_models"] == [other] and record["reference_images"] == 6
        for method in methods:
            steps = record["methods"][method]["steps"]
            assert [s["layer"] for s in steps][0].endswith("head") and len(steps) == 3
            for step in steps:
                for measure in ("spearman", "ssim"):
                    assert step["similarity"][measure]["images"] == 6
                    assert set(step["below_reference"][measure]) == {"images", "mean", "ci95", "alternative",
                                                                     "p_value"}
            assert set(record["methods"][method]["reference"]) == {"spearman", "ssim"}
    for report in ("report.md", "report.html"):
        text = (out / report).read_text()
        assert "Saliency sanity check: cascading model randomisation" in text and "on 6 test images" in text
        assert "tiny_a: the reference is the similarity of its trained maps to those of tiny_b" in text
    assert {f"randomisation-{name}.png" for name in ("tiny_a", "tiny_b", "other_a")} <= {
        path.name for path in (out / "figures").iterdir()}
    first = metrics["tiny_b"]["methods"]["gradient"]["steps"][0]["similarity"]["spearman"]["mean"]
    assert f"{first:.3f}" in (out / "report.md").read_text()


def test_without_replicates_the_reference_is_unavailable(workspace: dict) -> None:  # noqa: F811
    out = workspace["root"] / "no-reference"
    assert analyze(workspace, out, "--randomisation-images", "4", "--models", "tiny_a") == 0
    record = json.loads((out / "metrics.json").read_text())["randomisation"]["tiny_a"]
    assert record["reference_models"] == [] and record["methods"]["gradient"]["reference"] is None
    assert "tiny_a: no seed-to-seed reference" in (out / "report.md").read_text()


def test_zero_images_omit_the_check_and_a_negative_count_is_one_line(workspace: dict, capsys) -> None:  # noqa: F811
    out = workspace["root"] / "no-randomisation"
    assert analyze(workspace, out, "--randomisation-images", "0") == 0
    assert json.loads((out / "metrics.json").read_text())["randomisation"] is None
    assert "Saliency sanity check" not in (out / "report.md").read_text()
    capsys.readouterr()
    assert analyze(workspace, workspace["root"] / "bad", "--randomisation-images", "-1") == 2
    error = capsys.readouterr().err
    assert "--randomisation-images must be at least 0, got -1" in error and error.count("\n") == 1
