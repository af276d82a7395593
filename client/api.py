"""Clients of the Open Inference Protocol over gRPC, blocking and asyncio: numpy arrays in, numpy arrays out.

Thin on purpose: one method per call of the protocol; gRPC errors (`grpc.RpcError`, `grpc.aio.AioRpcError`)
reach the caller with the server's status code and message.

example:
  with InferenceClient("localhost:8001") as client:
      out = client.infer("cifarnet", images, outputs=["LABEL", "PROBS", "SALIENCY"], parameters={"box": 3})
      out["LABEL"], out["SALIENCY"]      # int64 [N], float32 [N,H,W]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import grpc
import numpy as np

from miscause.proto import grpc_service_pb2 as pb
from miscause.proto import grpc_service_pb2_grpc as pb_grpc
from miscause.proto import tensors
from miscause.proto.names import CLASSES_METADATA, INPUT, PARAMETERS_METADATA

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def infer_request(model: str, images: np.ndarray, outputs: Iterable[str] | None = None,
                  parameters: Mapping[str, bool | int | float | str] | None = None,
                  request_id: str = "") -> pb.ModelInferRequest:
    """A ModelInferRequest: uint8 [N,H,W,3] or normalised float32 [N,3,H,W] images as raw contents."""
    images = np.asarray(images)
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name=INPUT, datatype=tensors.datatype_of(images), shape=list(images.shape))
    request.raw_input_contents.append(tensors.to_raw(images))
    for name in outputs or ():
        request.outputs.add(name=name)
    tensors.set_parameters(request.parameters, parameters or {})
    return request


def infer_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The response's output tensors by name."""
    result = {}
    for index, output in enumerate(response.outputs):
        if index < len(response.raw_output_contents):
            result[output.name] = tensors.from_raw(output.name, output.datatype, list(output.shape),
                                                   response.raw_output_contents[index])
        else:
            result[output.name] = tensors.from_contents(output.name, output.datatype, list(output.shape),
                                                        output.contents)
    return result


def model_description(response: pb.ModelMetadataResponse, metadata: Iterable[tuple[str, str]]) -> dict:
    """Model metadata as a dict, with the server's explanation defaults and class names where it sends them."""
    extra = dict(metadata or ())
    return {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in response.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in response.outputs],
        "parameters": json.loads(extra.get(PARAMETERS_METADATA, "{}")),
        "classes": json.loads(extra.get(CLASSES_METADATA, "[]")),
    }


def _channel_args(max_message_bytes: int, server_name: str | None) -> list[tuple[str, object]]:
    options: list[tuple[str, object]] = [("grpc.max_receive_message_length", max_message_bytes),
                                         ("grpc.max_send_message_length", max_message_bytes)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


class _Base:
    """Channel, stub and call metadata, made one way for the blocking and the asyncio client."""

    def __init__(self, channels, target: str, token: str | None, tls: bool, root_certificates: bytes | None,
                 server_name: str | None, max_message_bytes: int) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = _channel_args(max_message_bytes, server_name)
        if tls or root_certificates:
            credentials = grpc.ssl_channel_credentials(root_certificates)
            self.channel = channels.secure_channel(target, credentials, options=options)
        else:
            self.channel = channels.insecure_channel(target, options=options)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)


class InferenceClient(_Base):
    """A blocking client. `tls=True` (or `root_certificates`) for TLS; `token` sends a bearer token."""

    def __init__(self, target: str, token: str | None = None, tls: bool = False,
                 root_certificates: bytes | None = None, server_name: str | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__(grpc, target, token, tls, root_certificates, server_name, max_message_bytes)

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def live(self, timeout: float | None = None) -> bool:
        return self.stub.ServerLive(pb.ServerLiveRequest(), timeout=timeout, metadata=self.metadata).live

    def ready(self, timeout: float | None = None) -> bool:
        return self.stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout, metadata=self.metadata).ready

    def model_ready(self, model: str, timeout: float | None = None) -> bool:
        request = pb.ModelReadyRequest(name=model)
        return self.stub.ModelReady(request, timeout=timeout, metadata=self.metadata).ready

    def server_metadata(self, timeout: float | None = None) -> dict:
        response = self.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=timeout, metadata=self.metadata)
        return {"name": response.name, "version": response.version, "extensions": list(response.extensions)}

    def model_metadata(self, model: str, timeout: float | None = None) -> dict:
        response, call = self.stub.ModelMetadata.with_call(pb.ModelMetadataRequest(name=model), timeout=timeout,
                                                           metadata=self.metadata)
        return model_description(response, call.initial_metadata())

    def infer(self, model: str, images: np.ndarray, outputs: Iterable[str] | None = None,
              parameters: Mapping[str, bool | int | float | str] | None = None, timeout: float | None = None,
              request_id: str = "") -> dict[str, np.ndarray]:
        """Outputs by name for a batch of images (default outputs: LABEL and PROBS)."""
        request = infer_request(model, images, outputs, parameters, request_id)
        return infer_outputs(self.stub.ModelInfer(request, timeout=timeout, metadata=self.metadata))


class AsyncInferenceClient(_Base):
    """The asyncio twin of InferenceClient (grpc.aio); use `async with`."""

    def __init__(self, target: str, token: str | None = None, tls: bool = False,
                 root_certificates: bytes | None = None, server_name: str | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__(grpc.aio, target, token, tls, root_certificates, server_name, max_message_bytes)

    async def __aenter__(self) -> AsyncInferenceClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def live(self, timeout: float | None = None) -> bool:
        return (await self.stub.ServerLive(pb.ServerLiveRequest(), timeout=timeout, metadata=self.metadata)).live

    async def ready(self, timeout: float | None = None) -> bool:
        response = await self.stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout, metadata=self.metadata)
        return response.ready

    async def model_ready(self, model: str, timeout: float | None = None) -> bool:
        request = pb.ModelReadyRequest(name=model)
        return (await self.stub.ModelReady(request, timeout=timeout, metadata=self.metadata)).ready

    async def server_metadata(self, timeout: float | None = None) -> dict:
        response = await self.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=timeout,
                                                  metadata=self.metadata)
        return {"name": response.name, "version": response.version, "extensions": list(response.extensions)}

    async def model_metadata(self, model: str, timeout: float | None = None) -> dict:
        call = self.stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=timeout,
                                       metadata=self.metadata)
        response = await call
        return model_description(response, await call.initial_metadata())

    async def infer(self, model: str, images: np.ndarray, outputs: Iterable[str] | None = None,
                    parameters: Mapping[str, bool | int | float | str] | None = None,
                    timeout: float | None = None, request_id: str = "") -> dict[str, np.ndarray]:
        """Outputs by name for a batch of images (default outputs: LABEL and PROBS)."""
        request = infer_request(model, images, outputs, parameters, request_id)
        return infer_outputs(await self.stub.ModelInfer(request, timeout=timeout, metadata=self.metadata))
