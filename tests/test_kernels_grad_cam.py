"""Grad-CAM: equal to Captum's LayerGradCam (upsampled bilinearly, ReLU'd) on the zoo's networks and on the
served program, and one clear error for every layer it cannot use."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from test_server_support import source_model

from miscause import kernels, repository
from miscause.grad_cam_layers import GRAD_CAM_LAYERS
from miscause.jobs.training import zoo


def captum_grad_cam(network: torch.nn.Module, layer: str, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Captum's Grad-CAM of `layer`, interpolated bilinearly to the images' size, then ReLU'd: [N, H, W]."""
    cam = LayerGradCam(network, network.get_submodule(layer)).attribute(images, target=target)
    return LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), "bilinear").relu().squeeze(1).detach()


@pytest.mark.parametrize("arch", ["cifarnet", "resnet50", "mobilenet_v2"])
def test_grad_cam_matches_captum(arch: str) -> None:
    torch.manual_seed(0)
    network = zoo.build(arch).train()
    images = torch.randn(3, 3, 32, 32)
    target = torch.tensor([1, 4, 9])
    ours = kernels.saliency(network, images, "grad_cam", target, layer=GRAD_CAM_LAYERS[arch])[0]
    assert network.training, "the caller's mode is restored"
    network.eval()
    theirs = captum_grad_cam(network, GRAD_CAM_LAYERS[arch], images, target)
    assert ours.shape == (3, 32, 32) and ours.dtype == torch.float32
    assert bool((ours >= 0).all()) and bool((ours > 0).any())
    # a randomly initialised MobileNet's map peaks near 1e-10: the tolerance follows the map's scale
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * float(theirs.max()))


def test_served_program_explains_its_network_for_the_served_class() -> None:
    """The exported cifarnet runs its network twice (flip test-time augmentation): the map is its network's,
    found inside the program by the config's layer name, for the class the whole program predicts."""
    model_dir = source_model()
    config = repository.read_config(model_dir)
    program = repository.load_program(model_dir)
    images = torch.randn(4, 3, config.height, config.width, generator=torch.Generator().manual_seed(2))
    ours, logits = kernels.saliency(program, images, "grad_cam", **config.saliency_options("grad_cam"))
    with torch.no_grad():
        served = program(images)
    torch.testing.assert_close(logits, served)
    modules = dict(program.named_modules())
    assert config.grad_cam_layer not in modules, "the layer sits inside the test-time augmentation"
    (network,) = [module for name, module in modules.items() if f"{name}.{config.grad_cam_layer}" in modules]
    theirs = captum_grad_cam(network, config.grad_cam_layer, images, served.argmax(dim=1))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    assert bool((ours > 0).any())


def test_layer_found_as_a_module_and_inside_a_wrapper() -> None:
    torch.manual_seed(0)
    network = zoo.build("cifarnet").eval()
    images = torch.randn(2, 3, 32, 32)
    by_name = kernels.saliency(network, images, "grad_cam", 3, layer="groups.2")[0]
    torch.testing.assert_close(kernels.saliency(network, images, "grad_cam", 3, layer=network.groups[2])[0], by_name)
    wrapped = torch.nn.Sequential(network)
    torch.testing.assert_close(kernels.saliency(wrapped, images, "grad_cam", 3, layer="groups.2")[0], by_name)


def test_layers_grad_cam_cannot_use_are_one_clear_error() -> None:
    images = torch.randn(2, 3, 32, 32)
    dense = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(ValueError, match=r"layer '1' gives \[2, 10\], not a convolutional feature map"):
        kernels.saliency(dense, images, "grad_cam", layer="1")
    with pytest.raises(ValueError, match="grad_cam needs the option layer"):
        kernels.saliency(dense, images, "grad_cam")
    network = zoo.build("cifarnet")
    with pytest.raises(ValueError, match="no single layer named 'groups.7' in the CifarNet: found in no submodule"):
        kernels.saliency(network, images, "grad_cam", layer="groups.7")
    with pytest.raises(ValueError, match="no submodule"):
        kernels.saliency(network, images, "grad_cam", layer=torch.nn.Conv2d(3, 3, 1))
    twice = zoo.FlipTTA(network)
    with pytest.raises(ValueError, match="layer 'model.groups.2' ran 2 times in one forward pass"):
        kernels.saliency(twice, images, "grad_cam", layer="model.groups.2")
    both = torch.nn.ModuleDict({"a": network, "b": zoo.build("cifarnet")})
    with pytest.raises(ValueError, match=r"found in several submodules \(a, b\)"):
        kernels.saliency(both, images, "grad_cam", layer="groups.2")
