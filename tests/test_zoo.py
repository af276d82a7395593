"""Every architecture runs forward and backward at 32x32, has the classifier asked for and a Grad-CAM layer."""

from __future__ import annotations

import pytest
import torch

from miscause import kernels
from miscause.errors import MiscauseError
from miscause.grad_cam_layers import GRAD_CAM_LAYERS
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


@pytest.mark.parametrize("arch", list(zoo.REGISTRY))
def test_grad_cam_layer_is_a_spatial_feature_map_before_the_pooling(arch):
    """Each architecture's Grad-CAM layer gives a [N, C, h, w] map with h, w >= 2, and Grad-CAM runs on it."""
    torch.manual_seed(0)
    model = zoo.build(arch).eval()
    layer = model.get_submodule(GRAD_CAM_LAYERS[arch])
    shapes = []
    handle = layer.register_forward_hook(lambda _module, _inputs, output: shapes.append(tuple(output.shape)))
    saliency, logits = kernels.saliency(model, torch.randn(2, 3, 32, 32), "grad_cam", layer=GRAD_CAM_LAYERS[arch])
    handle.remove()
    assert len(shapes) == 1 and len(shapes[0]) == 4 and min(shapes[0][2:]) >= 2, shapes
    assert saliency.shape == (2, 32, 32) and bool(torch.isfinite(saliency).all()) and logits.shape == (2, 10)


def test_every_architecture_has_a_grad_cam_layer():
    assert set(GRAD_CAM_LAYERS) == set(zoo.REGISTRY)


# the CPU-scaled variants: (parameters, the Grad-CAM layer's feature map at 32x32, what makes them the family)
CPU_VARIANTS = {
    "resnet18": (11_173_962, (512, 2, 2)),
    "vgg16_bn_half": (3_686_954, (256, 2, 2)),
    "mobilenet_v2_half": (700_490, (1280, 4, 4)),
}


@pytest.mark.parametrize("arch", list(CPU_VARIANTS))
def test_cpu_variants_have_the_stated_size_and_last_feature_map(arch):
    params, feature_map = CPU_VARIANTS[arch]
    model = zoo.build(arch).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    shapes = []
    model.get_submodule(GRAD_CAM_LAYERS[arch]).register_forward_hook(
        lambda _module, _inputs, output: shapes.append(tuple(output.shape[1:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert shapes == [feature_map]


def test_vgg16_bn_half_keeps_vgg16_bn_layers_at_half_width():
    """Thirteen 3x3 conv-BN-ReLU layers and five poolings, in the full network's order, each conv half as wide."""
    full, half = zoo.build("vgg16_bn").features, zoo.build("vgg16_bn_half").features
    assert [type(m) for m in half] == [type(m) for m in full]
    convs = [(m, n) for m, n in zip(full, half, strict=True) if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13
    assert all(n.out_channels * 2 == m.out_channels and n.kernel_size == (3, 3) for m, n in convs)


def test_mobilenet_v2_half_keeps_the_inverted_residual_blocks_with_a_stride_2_stem():
    from torchvision.models.mobilenetv2 import InvertedResidual

    full, half = zoo.build("mobilenet_v2").features, zoo.build("mobilenet_v2_half").features
    assert [type(m) for m in half] == [type(m) for m in full]
    assert sum(isinstance(m, InvertedResidual) for m in half) == 17
    assert half[0][0].stride == (2, 2) and full[0][0].stride == (1, 1)
    depthwise = [m for m in half.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels for m in depthwise)
