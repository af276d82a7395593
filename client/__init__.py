"""miscause.client: blocking and asyncio clients of the inference server, and `miscause client infer`.

Depends only on the protocol (`miscause.proto`), grpc, numpy and Pillow.
"""

from miscause.client.api import AsyncInferenceClient, InferenceClient

__all__ = ["AsyncInferenceClient", "InferenceClient"]
