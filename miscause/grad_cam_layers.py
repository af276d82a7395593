"""The layer Grad-CAM explains in each architecture of the model zoo: its last convolutional block.

Names are relative to the network itself (not to a test-time-augmentation wrapper around it), so the same name
finds the layer in a checkpoint's network, in the network as served and in its exported program. Each is the
last block whose output is still a spatial feature map, before the global pooling; at 32x32 input:

| architecture | layer | feature map |
|---|---|---|
| cifarnet | `groups.2`, the third conv group | 256 x 3 x 3 |
| vgg16_bn | `features.42`, the ReLU after the last conv (the pooling after it leaves 1 x 1) | 512 x 2 x 2 |
| vgg16_bn_half | `features.42`, as vgg16_bn | 256 x 2 x 2 |
| resnet50 | `layer4` | 2048 x 4 x 4 |
| resnet18 | `layer4` (its stem has stride 2) | 512 x 2 x 2 |
| googlenet | `inception5b` | 1024 x 8 x 8 |
| densenet161 | `features.norm5`, the batch norm closing the last dense block | 2208 x 4 x 4 |
| mobilenet_v2 | `features.18`, the last 1x1 conv block | 1280 x 4 x 4 |
| mobilenet_v2_half | `features.18`, as mobilenet_v2 (stages at 16, 16, 8, 4) | 1280 x 4 x 4 |
| inception_v3 | `Mixed_7c` | 2048 x 3 x 3 |

A model's config.json records its layer (`grad_cam_layer`); files written before it did get this table's entry.
"""

GRAD_CAM = "grad_cam"  # the saliency method (one of `miscause.kernels.METHODS`) that needs these layers

GRAD_CAM_LAYERS: dict[str, str] = {
    "cifarnet": "groups.2",
    "vgg16_bn": "features.42",
    "vgg16_bn_half": "features.42",
    "resnet50": "layer4",
    "resnet18": "layer4",
    "googlenet": "inception5b",
    "densenet161": "features.norm5",
    "mobilenet_v2": "features.18",
    "mobilenet_v2_half": "features.18",
    "inception_v3": "Mixed_7c",
}
