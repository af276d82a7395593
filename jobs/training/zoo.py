"""The model zoo: the study's six torchvision architectures adapted to 32x32 inputs, the default network, and
a compact ResNet-18 that trains on a CPU.

Every adaptation of the study's architectures follows one rule, applied once per architecture below: the
ImageNet stem's stride-2 convolution becomes a 3x3 stride-1 convolution and the stem's early pooling is
removed, so a 32x32 image keeps enough resolution to reach the last stage; the classifier is replaced by one
for `num_classes`. Weights are randomly initialised (torchvision's own initialisers); nothing is downloaded.

Three CPU-scaled variants keep their family's defining blocks at a fraction of the work, so that four
architecture families train on a 2-core CPU: `resnet18` (stride-2 stem), `vgg16_bn_half` (half width) and
`mobilenet_v2_half` (stride-2 stem, half width). Each is named for what it is, never as a full-size network.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn import functional
from torchvision import models
from torchvision.models.googlenet import BasicConv2d as GoogLeNetConv
from torchvision.models.inception import BasicConv2d as InceptionConv
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers as make_vgg_layers

from miscause.errors import MiscauseError
from miscause.jobs.training.cifarnet import CifarNet

DEFAULT_ARCH = "cifarnet"
STUDY_ARCHS = ("vgg16_bn", "resnet50", "googlenet", "densenet161", "mobilenet_v2", "inception_v3")


def vgg16_bn(num_classes: int) -> nn.Module:
    """VGG16-BN: its 3x3 stride-1 convs already suit 32x32; five poolings leave 1x1x512, so one linear layer."""
    return _vgg16_bn(num_classes, 1)


def vgg16_bn_half(num_classes: int) -> nn.Module:
    """VGG16-BN at half width (32 to 256 channels): all thirteen 3x3 conv-BN-ReLU layers and five poolings, a
    quarter of the full network's work, so it trains on a CPU. Not one of the study's six."""
    return _vgg16_bn(num_classes, 2)


def _vgg16_bn(num_classes: int, divisor: int) -> nn.Module:
    """torchvision's VGG16-BN layers (configuration D) with every width divided by `divisor`, pooled to 1x1
    before one linear layer."""
    widths = [v if v == "M" else v // divisor for v in vgg_cfgs["D"]]
    model = models.VGG(make_vgg_layers(widths, batch_norm=True), num_classes=num_classes)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Linear(widths[-2], num_classes)
    return model


def resnet50(num_classes: int) -> nn.Module:
    """ResNet-50: 3x3 stride-1 stem, no max-pool; stages run at 32, 16, 8, 4."""
    model = models.resnet50(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def resnet18(num_classes: int) -> nn.Module:
    """ResNet-18 with a 3x3 stride-2 stem and no max-pool: stages at 16, 8, 4, 2. Not one of the study's six:
    a second architecture, unlike cifarnet, at a quarter of the stride-1 stem's cost, so it trains on a CPU."""
    model = models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def googlenet(num_classes: int) -> nn.Module:
    """GoogLeNet: 3x3 stride-1 stem, both stem poolings removed; inception stages at 32, 16, 8."""
    model = models.googlenet(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=True)
    model.conv1 = GoogLeNetConv(3, 64, kernel_size=3, stride=1, padding=1)
    model.maxpool1 = nn.Identity()
    model.maxpool2 = nn.Identity()
    return model


def densenet161(num_classes: int) -> nn.Module:
    """DenseNet-161: 3x3 stride-1 stem, no pool0; dense blocks at 32, 16, 8, 4."""
    model = models.densenet161(num_classes=num_classes)
    model.features.conv0 = nn.Conv2d(3, 96, 3, stride=1, padding=1, bias=False)
    model.features.pool0 = nn.Identity()
    return model


def mobilenet_v2(num_classes: int) -> nn.Module:
    """MobileNet V2: stride 1 in the stem and in the first stride-2 block, so the last stage runs at 4x4."""
    model = models.mobilenet_v2(num_classes=num_classes)
    model.features[0][0].stride = (1, 1)
    model.features[2].conv[1][0].stride = (1, 1)
    return model


def mobilenet_v2_half(num_classes: int) -> nn.Module:
    """MobileNet V2 at width 0.5 (inverted residual blocks, depthwise convs, linear bottlenecks) with its stride-2
    stem and stride 1 in the first two stride-2 blocks: stages at 16, 16, 8, 4, so it ends on `mobilenet_v2`'s
    4x4 grid with its first six blocks at a quarter of the positions and every width halved; it trains on a CPU.
    (Ending at 2x2, as a stride-2 stem alone leaves it, it underfit: 73% test after 10 epochs.) Not one of the
    study's six."""
    model = models.mobilenet_v2(num_classes=num_classes, width_mult=0.5)
    model.features[2].conv[1][0].stride = (1, 1)
    model.features[4].conv[1][0].stride = (1, 1)
    return model


def inception_v3(num_classes: int) -> nn.Module:
    """Inception V3: padded stride-1 stem, first pooling removed; Mixed_5 at 16x16, Mixed_6 at 7, Mixed_7 at 3.

    torchvision's network needs at least 75x75 input; these changes make it run, unchanged otherwise, at 32x32.
    """
    model = models.inception_v3(num_classes=num_classes, aux_logits=False, transform_input=False,
                                init_weights=True)
    model.Conv2d_1a_3x3 = InceptionConv(3, 32, kernel_size=3, stride=1, padding=1)
    model.Conv2d_2a_3x3 = InceptionConv(32, 32, kernel_size=3, padding=1)
    model.maxpool1 = nn.Identity()
    model.Conv2d_4a_3x3 = InceptionConv(80, 192, kernel_size=3, padding=1)
    return model


REGISTRY: dict[str, Callable[[int], nn.Module]] = {
    "cifarnet": lambda num_classes: CifarNet(num_classes),
    "vgg16_bn": vgg16_bn,
    "vgg16_bn_half": vgg16_bn_half,
    "resnet50": resnet50,
    "resnet18": resnet18,
    "googlenet": googlenet,
    "densenet161": densenet161,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v2_half": mobilenet_v2_half,
    "inception_v3": inception_v3,
}


def build(arch: str, num_classes: int = 10) -> nn.Module:
    """A fresh model of architecture `arch`; a clear error naming the choices for an unknown name."""
    try:
        factory = REGISTRY[arch]
    except KeyError:
        raise MiscauseError(f"unknown architecture {arch!r}: choose one of {', '.join(REGISTRY)}") from None
    return factory(num_classes)


class FlipTTA(nn.Module):
    """Test-time augmentation inside the graph: the mean of the logits of the image and its mirror image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return 0.5 * (self.model(x) + self.model(x.flip(-1)))


class MultiCropTTA(nn.Module):
    """airbench's mirror-and-translate augmentation: half the flip-TTA logits of the image, half their mean over
    the image shifted one pixel up-left and down-right (reflect padding). Six forward passes per image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.flip = FlipTTA(model)

    def forward(self, x):
        height, width = x.shape[-2:]
        padded = functional.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = self.flip(padded[..., :height, :width]) + self.flip(padded[..., 2:, 2:])
        return 0.5 * self.flip(x) + 0.25 * shifted


TTA: dict[str, Callable[[nn.Module], nn.Module]] = {"flip": FlipTTA, "multicrop": MultiCropTTA}
TTA_CHOICES = ("none", *TTA)


def served_model(model: nn.Module, tta: str) -> nn.Module:
    """The network as it is served, in eval mode: wrapped in the test-time augmentation `tta` names."""
    if tta not in TTA_CHOICES:
        raise MiscauseError(f"unknown test-time augmentation {tta!r}: choose one of {', '.join(TTA_CHOICES)}")
    return (TTA[tta](model) if tta in TTA else model).eval()
