"""Saliency methods: agreement with Captum on a real torchvision network, the returned logits, modes, options.
Grad-CAM has its own file, tests/test_kernels_grad_cam.py."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import Saliency as CaptumSaliency

from miscause import kernels


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    """A randomly initialised ResNet-18 for 10 classes, in training mode as a user might leave it."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).train()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32)


def test_gradient_matches_captum_saliency(network: torch.nn.Module, images: torch.Tensor) -> None:
    target = torch.tensor([0, 3, 3, 9])
    ours = kernels.saliency(network, images, "gradient", target)[0]
    assert network.training, "the caller's mode is restored"
    network.eval()
    theirs = CaptumSaliency(network).attribute(images.clone().requires_grad_(), target=target, abs=True)
    theirs = theirs.detach().amax(dim=1)
    network.train()
    assert ours.shape == (4, 32, 32) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-8)


def test_input_x_gradient_matches_captum(network: torch.nn.Module, images: torch.Tensor) -> None:
    network.eval()
    predicted = network(images).argmax(dim=1)
    theirs = CaptumInputXGradient(network).attribute(images.clone().requires_grad_(), target=predicted)
    theirs = theirs.detach().abs().amax(dim=1)
    network.train()
    ours = kernels.saliency(network, images, "input_x_gradient")[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-8)


def test_saliency_returns_the_eval_logits_of_its_own_forward(network: torch.nn.Module,
                                                             images: torch.Tensor) -> None:
    saliency, logits = kernels.saliency(network, images)
    network.eval()
    with torch.no_grad():
        expected = network(images)
    network.train()
    assert logits.shape == (4, 10) and logits.dtype == torch.float32 and not logits.requires_grad
    torch.testing.assert_close(logits, expected)
    by_class = kernels.saliency(network, images, target=expected.argmax(dim=1))[0]
    torch.testing.assert_close(saliency, by_class)


def test_batched_backward_equals_one_image_at_a_time(network: torch.nn.Module, images: torch.Tensor) -> None:
    batched, _ = kernels.saliency(network, images, target=2)
    single = torch.cat([kernels.saliency(network, images[i:i + 1], target=2)[0] for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-7)


def test_smoothgrad_is_seeded_and_reduces_to_gradient_without_noise(network: torch.nn.Module,
                                                                    images: torch.Tensor) -> None:
    first = kernels.saliency(network, images, "smoothgrad", n_samples=3, sigma=0.2,
                             generator=torch.Generator().manual_seed(5))[0]
    again = kernels.saliency(network, images, "smoothgrad", n_samples=3, sigma=0.2,
                             generator=torch.Generator().manual_seed(5))[0]
    torch.testing.assert_close(first, again)
    plain = kernels.saliency(network, images)[0]
    assert not torch.allclose(first, plain)
    noiseless, logits = kernels.saliency(network, images, "smoothgrad", n_samples=2, sigma=0.0)
    torch.testing.assert_close(noiseless, plain, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(logits, kernels.saliency(network, images)[1])


def test_exported_program_module_works_without_eval(network: torch.nn.Module, images: torch.Tensor) -> None:
    network.eval()
    program = torch.export.export(network, (images,)).module()
    network.train()
    ours, logits = kernels.saliency(program, images, target=1)
    network.eval()
    reference, expected = kernels.saliency(network, images, target=1)
    network.train()
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


def test_inference_mode_callers_get_gradients(network: torch.nn.Module) -> None:
    with torch.inference_mode():
        images = torch.randn(2, 3, 32, 32)
        saliency, _ = kernels.saliency(network, images)
    assert saliency.shape == (2, 32, 32) and bool((saliency > 0).any())


def test_bad_method_options_and_targets(network: torch.nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="unknown saliency method 'lime'; choose one of gradient, "
                                         "input_x_gradient, smoothgrad, integrated_gradients, grad_cam$"):
        kernels.saliency(network, images, "lime")
    with pytest.raises(ValueError, match="unknown option"):
        kernels.saliency(network, images, "gradient", n_samples=3)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        kernels.saliency(network, images, "smoothgrad", n_samples=0)
    with pytest.raises(ValueError, match="one class or one per image"):
        kernels.saliency(network, images, target=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"target classes must lie in \[0, 10\)"):
        kernels.saliency(network, images, target=10)
    with pytest.raises(ValueError, match=r"floating-point \[N, C, H, W\]"):
        kernels.saliency(network, images[0])


@pytest.mark.parametrize(("n_steps", "integration", "baseline"), [
    (50, "gausslegendre", None),  # Captum's defaults: 50 Gauss-Legendre points from a zero baseline
    (12, "riemann_middle", "random"),
])
def test_integrated_gradients_matches_captum(network: torch.nn.Module, images: torch.Tensor, n_steps: int,
                                             integration: str, baseline: str | None) -> None:
    start = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) if baseline else None
    target = torch.tensor([0, 3, 3, 9])
    options = {"n_steps": n_steps, "integration": integration} | ({"baseline": start} if baseline else {})
    ours = kernels.saliency(network, images, "integrated_gradients", target, **options)[0]
    assert network.training, "the caller's mode is restored"
    network.eval()
    theirs = CaptumIntegratedGradients(network).attribute(images, baselines=start, target=target, n_steps=n_steps,
                                                          method=integration)
    network.train()
    theirs = theirs.detach().abs().amax(dim=1)
    assert ours.shape == (4, 32, 32) and ours.dtype == torch.float32 and bool((ours > 0).any())
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)


def test_integrated_gradients_in_chunks_of_steps_and_its_logits(network: torch.nn.Module,
                                                                images: torch.Tensor) -> None:
    whole, logits = kernels.saliency(network, images, "integrated_gradients", n_steps=7)
    one_step_a_pass, _ = kernels.saliency(network, images, "integrated_gradients", n_steps=7, internal_batch_size=3)
    torch.testing.assert_close(one_step_a_pass, whole, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(logits, kernels.saliency(network, images)[1])
    constant, _ = kernels.saliency(network, images, "integrated_gradients", n_steps=7, baseline=images)
    assert not bool(constant.any()), "no path from the image to itself: zero attribution"


def test_integrated_gradients_bad_options(network: torch.nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        kernels.saliency(network, images, "integrated_gradients", n_steps=0)
    with pytest.raises(ValueError, match="unknown integration 'simpson'; choose one of gausslegendre"):
        kernels.saliency(network, images, "integrated_gradients", integration="simpson")
    with pytest.raises(ValueError, match=r"baseline of shape \[2, 3\] does not broadcast"):
        kernels.saliency(network, images, "integrated_gradients", baseline=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="internal_batch_size must be an integer >= 1"):
        kernels.saliency(network, images, "integrated_gradients", internal_batch_size=0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) for integrated_gradients: layer"):
        kernels.saliency(network, images, "integrated_gradients", layer="layer4")
