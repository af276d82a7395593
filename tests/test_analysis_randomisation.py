"""The model-randomisation sanity check on the trained default model: the gradient map changes when the weights
are re-initialised; a map that ignores the model does not. In the report: the repository path's section and
metrics entry hold what the check gives on the same images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_analysis_erasure import workspace  # noqa: F401
from test_server_support import source_model

from miscause import kernels, repository
from miscause.cli import main
from miscause.jobs.analysis.erasure.curves import curve_rows
from miscause.jobs.analysis.erasure.randomisation import randomisation_check, randomised, rank_correlations
from miscause.jobs.analysis.inputs.images import subset
from miscause.jobs.analysis.inputs.repository_model import load_model
from miscause.jobs.training.data import load_split


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    return repository.load_program(source_model())


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_gradient_map_depends_on_the_weights(trained: torch.nn.Module, images: torch.Tensor) -> None:
    before = kernels.saliency(trained, images)[0]
    correlations = randomisation_check(trained, images, "gradient")
    assert correlations.shape == (16,) and np.isfinite(correlations).all()
    assert np.median(correlations) < 0.7 and correlations.max() < 0.9, correlations
    torch.testing.assert_close(kernels.saliency(trained, images)[0], before, msg="the trained weights are back")


def test_a_map_that_ignores_the_model_survives_randomisation(trained: torch.nn.Module, images: torch.Tensor) -> None:
    def intensity(model: torch.nn.Module, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return images.abs().amax(dim=1)

    np.testing.assert_allclose(randomisation_check(trained, images, intensity), 1.0, rtol=0, atol=1e-12)


def test_randomised_weights_are_seeded_and_restored(trained: torch.nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad():
        original = trained(images)
        with randomised(trained, seed=3):
            first = trained(images)
        with randomised(trained, seed=3):
            again = trained(images)
        assert not torch.allclose(first, original)
        torch.testing.assert_close(first, again)
        torch.testing.assert_close(trained(images), original)


def test_rank_correlations() -> None:
    maps = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    other = torch.stack([maps[0], -maps[1]])
    np.testing.assert_allclose(rank_correlations(maps, other), [1.0, -1.0])
    assert np.isnan(rank_correlations(maps, torch.ones_like(maps))).all()
    with pytest.raises(ValueError, match=r"two \[N, H, W\] maps of one shape"):
        rank_correlations(maps, maps[:1])
    with pytest.raises(ValueError, match="unknown saliency method 'lime'"):
        randomisation_check(torch.nn.Identity(), torch.zeros(1, 3, 2, 2), "lime")


def analyze(workspace: dict, out: Path, *options: str) -> int:  # noqa: F811
    return main(["analyze", "--repository", str(workspace["repo"]), "--data", str(workspace["data"]), "--out",
                 str(out), "--min-count", "2", "--device", "cpu", "--no-progress", "--batch-size", "4", *options])


def test_report_holds_the_check_of_every_method_each_model_offers(workspace: dict) -> None:  # noqa: F811
    out = workspace["root"] / "randomisation"
    assert analyze(workspace, out, "--randomisation-images", "6", "--seed", "3") == 0
    metrics = json.loads((out / "metrics.json").read_text())["randomisation"]
    images, _, _ = subset(load_split(workspace["data"], "test"), None, 3)
    rows = curve_rows(len(images), 6, 3)
    methods = [m for m in kernels.METHODS if m != "grad_cam"]  # the tiny models name no Grad-CAM layer
    cpu = torch.device("cpu")
    for name in ("tiny_a", "tiny_b"):
        model = load_model(workspace["repo"], name, cpu)
        assert list(metrics[name]) == methods
        for method in methods:
            expected = np.concatenate([randomisation_check(model.module, model.prepare(images[rows[b:b + 4]], cpu),
                                                           method, seed=3) for b in (0, 4)])
            ranked = expected[np.isfinite(expected)]
            record = metrics[name][method]
            assert record["images"] == 6 and record["nan"] == 6 - len(ranked) and record["seed"] == 3
            assert record["median"] == pytest.approx(np.median(ranked), abs=1e-12)
            q25, q75 = np.percentile(ranked, [25, 75])
            assert record["quartiles"] == pytest.approx([q25, q75], abs=1e-12)
            assert record["iqr"] == pytest.approx(q75 - q25, abs=1e-12)
    for report in ("report.md", "report.html"):
        text = (out / report).read_text()
        assert "Saliency sanity check: model randomisation" in text and "on 6 test images" in text
        assert f"{metrics['tiny_b']['gradient']['median']:.3f}" in text


def test_zero_images_omit_the_check_and_a_negative_count_is_one_line(workspace: dict, capsys) -> None:  # noqa: F811
    out = workspace["root"] / "no-randomisation"
    assert analyze(workspace, out, "--randomisation-images", "0") == 0
    assert json.loads((out / "metrics.json").read_text())["randomisation"] is None
    assert "Saliency sanity check" not in (out / "report.md").read_text()
    capsys.readouterr()
    assert analyze(workspace, workspace["root"] / "bad", "--randomisation-images", "-1") == 2
    error = capsys.readouterr().err
    assert "--randomisation-images must be at least 0, got -1" in error and error.count("\n") == 1
