"""Every architecture runs forward and backward at 32x32 and has the classifier asked for."""

from __future__ import annotations

import pytest
import torch

from miscause.errors import MiscauseError
from miscause.jobs.training import zoo


@pytest.mark.parametrize("arch", list(zoo.REGISTRY))
def test_forward_and_backward_at_32x32(arch):
    torch.manual_seed(0)
    model = zoo.build(arch, num_classes=7).train()
    images = torch.randn(2, 3, 32, 32, requires_grad=True)
    logits = model(images)
    assert logits.shape == (2, 7)
    logits.logsumexp(1).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable), "a trainable parameter got no gradient"


def test_study_architectures_are_registered():
    assert set(zoo.STUDY_ARCHS) <= set(zoo.REGISTRY)
    assert zoo.DEFAULT_ARCH in zoo.REGISTRY


def test_default_network_is_small():
    params = sum(p.numel() for p in zoo.build(zoo.DEFAULT_ARCH).parameters())
    assert params < 3_000_000


def test_unknown_architecture_names_the_choices():
    with pytest.raises(MiscauseError, match="resnet50"):
        zoo.build("resnet5")


def test_whitening_layer_whitens_patches():
    from miscause.jobs.training.cifarnet import CifarNet

    images = torch.randn(64, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    net = CifarNet()
    net.init_whitening(images, eps=0.0)
    out = torch.nn.functional.conv2d(images, net.whiten.weight[:12])
    flat = out.transpose(0, 1).reshape(12, -1)
    covariance = torch.cov(flat)
    torch.testing.assert_close(covariance, torch.eye(12), atol=0.05, rtol=0.05)


def test_flip_tta_averages_mirror_images():
    model = zoo.build("cifarnet").eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = (model(images) + model(images.flip(-1))) / 2
        torch.testing.assert_close(zoo.FlipTTA(model)(images), expected)
