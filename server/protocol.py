"""Requests in, responses out: Open Inference Protocol messages decoded and checked, results encoded.

Every check names what is wrong; a request that fails one never reaches a batch.
"""

from __future__ import annotations

import grpc
import numpy as np

from miscause import repository
from miscause.proto import grpc_service_pb2 as pb
from miscause.proto import tensors
from miscause.proto.names import DEFAULT_OUTPUTS, INPUT, OUTPUTS
from miscause.server.engine import Engine, ServedModel
from miscause.server.pipeline import Work

PLATFORM = "ensemble"  # ONNX Runtime, a torch.export program and the erasure kernel behind one model


class RequestError(Exception):
    """A request the server refuses: the gRPC status to answer with and a message saying why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def find_model(engine: Engine, name: str, version: str) -> ServedModel:
    """The named model; NOT_FOUND for an unknown name or version."""
    model = engine.models.get(name)
    if model is None:
        known = ", ".join(engine.models) or "none"
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r} (served: {known})")
    if version not in ("", repository.VERSION):
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"model {name!r} has no version {version!r} (versions: {repository.VERSION})")
    return model


def output_shapes(model: ServedModel) -> dict[str, list[int]]:
    """Each output's shape for this model, the batch dimension as -1."""
    sizes = {"K": len(model.classes), "H": model.height, "W": model.width}
    return {name: [-1] + [sizes[d] for d in dims] for name, (_, dims) in OUTPUTS.items()}


def model_metadata(model: ServedModel) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(name=model.name, versions=[repository.VERSION], platform=PLATFORM)
    response.inputs.add(name=INPUT, datatype="UINT8", shape=[-1, model.height, model.width, 3])
    for name, shape in output_shapes(model).items():
        response.outputs.add(name=name, datatype=OUTPUTS[name][0], shape=shape)
    return response


def _image(request: pb.ModelInferRequest, model: ServedModel, max_batch: int, max_side: int) -> np.ndarray:
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT:
        names = [t.name for t in request.inputs]
        raise invalid(f"expected exactly one input named {INPUT}, got {names}")
    tensor = request.inputs[0]
    if tensor.parameters:
        raise invalid(f"input parameters are not supported: {', '.join(tensor.parameters)}")
    shape = list(tensor.shape)
    h, w = model.height, model.width
    if tensor.datatype == "UINT8":
        layout, expected = "[N,H,W,3]", [h, w, 3]
    elif tensor.datatype == "FP32":
        layout, expected = "[N,3,H,W]", [3, h, w]
    else:
        raise invalid(f"{INPUT}: datatype must be UINT8 [N,H,W,3] or FP32 [N,3,H,W], got {tensor.datatype!r}")
    if len(shape) != 4:
        raise invalid(f"{INPUT}: {tensor.datatype} must have rank 4 {layout}, got shape {shape}")
    if not 1 <= shape[0] <= max_batch:
        raise invalid(f"{INPUT}: batch size must lie in 1..{max_batch}, got {shape[0]}")
    sides = shape[1:3] if tensor.datatype == "UINT8" else shape[2:4]
    channels = shape[3] if tensor.datatype == "UINT8" else shape[1]
    if max(sides) > max_side:
        raise invalid(f"{INPUT}: image side {max(sides)} exceeds the server's max image side {max_side}")
    if channels != 3:
        raise invalid(f"{INPUT}: images must have 3 channels, got {channels} in shape {shape} {layout}")
    if shape[1:] != expected:
        raise invalid(f"{INPUT}: model {model.name} takes {h}x{w} images: shape {layout[:-1]} = "
                      f"[N,{','.join(map(str, expected))}], got {shape}")
    try:
        if request.raw_input_contents:
            if len(request.raw_input_contents) != len(request.inputs):
                raise invalid(f"{len(request.raw_input_contents)} raw input contents for "
                              f"{len(request.inputs)} inputs")
            images = tensors.from_raw(INPUT, tensor.datatype, shape, request.raw_input_contents[0])
        else:
            images = tensors.from_contents(INPUT, tensor.datatype, shape, tensor.contents)
    except ValueError as error:
        raise invalid(str(error)) from None
    if images.dtype == np.float32 and not np.isfinite(images).all():
        raise invalid(f"{INPUT}: FP32 images contain NaN or infinite values")
    return images


def _outputs(request: pb.ModelInferRequest) -> tuple[str, ...]:
    names: list[str] = []
    for output in request.outputs:
        if output.name not in OUTPUTS:
            raise invalid(f"unknown output {output.name!r}; known: {', '.join(OUTPUTS)}")
        if output.parameters:
            raise invalid(f"output {output.name}: output parameters are not supported")
        if output.name not in names:
            names.append(output.name)
    return tuple(names) or DEFAULT_OUTPUTS


def decode(request: pb.ModelInferRequest, engine: Engine) -> tuple[ServedModel, Work]:
    """The model a request addresses and its checked Work; RequestError when anything is wrong."""
    model = find_model(engine, request.model_name, request.model_version)
    limits = engine.settings
    images = _image(request, model, limits.batching.max_batch_size, limits.max_image_side)
    outputs = _outputs(request)
    values = {key: tensors.parameter_value(value) for key, value in request.parameters.items()}
    try:
        explain = engine.explain(model, values)
    except ValueError as error:
        raise invalid(str(error)) from None
    return model, Work(images=images, outputs=outputs, explain=explain)


def encode(request: pb.ModelInferRequest, model: ServedModel,
           results: dict[str, np.ndarray]) -> pb.ModelInferResponse:
    """The response: the requested outputs, in the requested order, as raw contents."""
    response = pb.ModelInferResponse(model_name=model.name, model_version=repository.VERSION, id=request.id)
    for name, array in results.items():
        response.outputs.add(name=name, datatype=OUTPUTS[name][0], shape=list(array.shape))
        response.raw_output_contents.append(tensors.to_raw(array))
    return response
