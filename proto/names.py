"""Names both ends agree on beyond the protocol's messages: the input tensor of miscause models and the
response metadata keys carrying what the protocol's ModelMetadata has no field for (JSON values)."""

INPUT = "IMAGE"
PARAMETERS_METADATA = "miscause-parameters"  # the model's explanation defaults
CLASSES_METADATA = "miscause-classes"  # class names, indexed by LABEL
