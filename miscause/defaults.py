"""The study's erasure settings, the defaults of every part that erases: the analysis, the service, the client
and the benchmarks; and how many test images the model-randomisation sanity check of the saliency maps uses.
The saliency method names belong to `miscause.kernels.METHODS`."""

TOP_PERCENT = 5.0  # anchors: the top 5% saliency pixels of each image (Min & Bennett, 2020)
BOX = 3  # side of the square erased around each anchor, in pixels
SALIENCY_METHOD = "gradient"
RANDOMISATION_IMAGES = 64  # test images of the model-randomisation check, per model
