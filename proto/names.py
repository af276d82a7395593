"""Names both ends agree on beyond the protocol's messages: the input tensor of miscause models, its output
tensors, the response metadata keys carrying what the protocol's ModelMetadata has no field for (JSON values),
and the environment variable holding the bearer token."""

INPUT = "IMAGE"
PARAMETERS_METADATA = "miscause-parameters"  # the model's explanation defaults
CLASSES_METADATA = "miscause-classes"  # class names, indexed by LABEL
METHODS_METADATA = "miscause-methods"  # the saliency methods the model offers
TOKEN_ENV = "MISCAUSE_TOKEN"

LOGITS, PROBS, LABEL = "LOGITS", "PROBS", "LABEL"
SALIENCY, MASK = "SALIENCY", "MASK"
ERASED_LABEL, ERASED_PROBS, CORRECTED_LABEL = "ERASED_LABEL", "ERASED_PROBS", "CORRECTED_LABEL"

# name -> (datatype, shape after the batch dimension: "K" classes, "H"/"W" the model's input side)
OUTPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    LOGITS: ("FP32", ("K",)),
    PROBS: ("FP32", ("K",)),
    LABEL: ("INT64", ()),
    SALIENCY: ("FP32", ("H", "W")),
    MASK: ("BOOL", ("H", "W")),
    ERASED_LABEL: ("INT64", ()),
    ERASED_PROBS: ("FP32", ("K",)),
    CORRECTED_LABEL: ("INT64", ()),
}
DEFAULT_OUTPUTS = (LABEL, PROBS)
