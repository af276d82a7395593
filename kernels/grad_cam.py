"""Grad-CAM (Selvaraju et al., 2017): where a convolutional layer's features drive a class logit.

Each channel of the layer's feature map is weighted by the spatial mean of the logit's gradient with respect
to it; the weighted sum over channels is upsampled bilinearly to the input size and its negative part set to
zero. The layer is named relative to the network, so the same name finds it inside a wrapper such as the
served model's test-time augmentation (`_locate`). There the layer runs once per augmented view and has no
single map, so the map is that of the wrapped network, for the class the whole model predicts (or `target`);
the logits returned are always the whole model's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from miscause.kernels.gradients import Target, check_images, classes_of, clean_logits, eval_mode, trackable


def _locate(model: nn.Module, layer: str | nn.Module) -> tuple[nn.Module, nn.Module]:
    """(network, layer module): the layer as `model` names it, else in the one submodule of `model` that holds
    it under that name (a network in a wrapper). A module is looked up by identity."""
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        names = [name for name, module in modules.items() if module is layer]
        if not names:
            raise ValueError(f"the layer given is no submodule of the {type(model).__name__}")
        layer = names[0]
    if layer in modules:
        return model, modules[layer]
    holders = [name for name in modules if name and f"{name}.{layer}" in modules]
    if len(holders) != 1:
        found = "in no submodule" if not holders else f"in several submodules ({', '.join(holders)})"
        raise ValueError(f"no single layer named {layer!r} in the {type(model).__name__}: found {found}")
    return modules[holders[0]], modules[f"{holders[0]}.{layer}"]


def grad_cam(model: nn.Module, images: torch.Tensor, target: Target = None,
             layer: str | nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(map [N, H, W] float32 >= 0, logits [N, K] float32) of normalised images, from `layer`'s feature map."""
    check_images(images)
    if layer is None or layer == "":
        raise ValueError("grad_cam needs the option layer: the name of the network's last convolutional block")
    network, module = _locate(model, layer)
    features: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _module, _inputs, output: features.append(output))
    try:
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            scores = network(trackable(images).requires_grad_(True))
    finally:
        handle.remove()
    if len(features) != 1:
        raise ValueError(f"layer {layer!r} ran {len(features)} times in one forward pass; Grad-CAM needs it "
                         "to run once (name it relative to the network inside any wrapper)")
    feature_map = features[0]
    if not isinstance(feature_map, torch.Tensor) or feature_map.dim() != 4:
        shape = list(feature_map.shape) if isinstance(feature_map, torch.Tensor) else type(feature_map).__name__
        raise ValueError(f"layer {layer!r} gives {shape}, not a convolutional feature map [N, C, h, w]: "
                         "Grad-CAM needs a convolutional block")
    logits = scores.detach().float() if network is model else clean_logits(model, images)
    classes = classes_of(target, logits)
    with torch.inference_mode(False), torch.enable_grad():
        (grad,) = torch.autograd.grad(scores.gather(1, classes[:, None]).sum(), feature_map)
    weighted = (grad.mean(dim=(2, 3), keepdim=True) * feature_map).sum(dim=1, keepdim=True).detach()
    upsampled = functional.interpolate(weighted, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return upsampled.squeeze(1).relu().float(), logits
