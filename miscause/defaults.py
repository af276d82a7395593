"""The study's erasure settings, the defaults of every part that erases: the analysis, the service, the client
and the benchmarks. The saliency method names belong to `miscause.kernels.METHODS`."""

TOP_PERCENT = 5.0  # anchors: the top 5% saliency pixels of each image (Min & Bennett, 2020)
BOX = 3  # side of the square erased around each anchor, in pixels
SALIENCY_METHOD = "gradient"
