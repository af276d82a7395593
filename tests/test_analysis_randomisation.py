"""The model-randomisation sanity check on the trained default model: the gradient map changes when the weights
are re-initialised; a map that ignores the model does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_server_support import source_model

from miscause import kernels, repository
from miscause.jobs.analysis.randomisation import randomisation_check, randomised, rank_correlations


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
