"""miscause.proto: the Open Inference Protocol's gRPC messages and stubs (generated) and the tensor codec."""
