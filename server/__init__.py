"""miscause.server: the gRPC inference service (Open Inference Protocol) over a model repository."""
