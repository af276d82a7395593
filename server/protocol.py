"""Requests in, responses out: Open Inference Protocol messages decoded and checked, results encoded.

Every check names what is wrong; a request that fails one never reaches a batch.
"""

from __future__ import annotations

import grpc
import numpy as np

from miscause import repository
from miscause.proto import grpc_service_pb2 as pb
from miscause.proto import model_config_pb2, tensors
from miscause.proto.names import DEFAULT_OUTPUTS, INPUT, OUTPUTS
from miscause.server.engine import Engine, ServedModel
from miscause.server.pipeline import Work
from miscause.server.settings import Settings
from miscause.server.status import RequestError, invalid, listed, shown

# (platform, backend) as Triton names them, by what computes the forward pass; the explanation stages always
# run the model's torch.export program and the erasure kernel
PLATFORMS = {"onnx": ("onnxruntime_onnx", "onnxruntime"), "torch": ("", "pytorch")}
# Request parameters Triton's clients send that are not explanation parameters
TIMEOUT, PRIORITY = "timeout", "priority"
MESSAGE_OVERHEAD = 1 << 20  # names, shapes, ids and parameters beside the tensor bytes
FP32_LIMIT = 1e4  # normalised pixels lie within a few units; far larger ones would overflow the saliency


def find_model(engine: Engine, name: str, version: str) -> ServedModel:
    """The named model; NOT_FOUND for an unknown name or version."""
    model = engine.models.get(name)
    if model is None:
        known = ", ".join(engine.models) or "none"
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"unknown model {shown(name)} (served: {known})")
    if version not in ("", repository.VERSION):
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"model {shown(name)} has no version {shown(version)} (versions: {repository.VERSION})")
    return model


def output_shapes(model: ServedModel) -> dict[str, list[int]]:
    """Each output's shape for this model, the batch dimension as -1."""
    sizes = {"K": len(model.classes), "H": model.height, "W": model.width}
    return {name: [-1] + [sizes[d] for d in dims] for name, (_, dims) in OUTPUTS.items()}


def model_metadata(model: ServedModel, settings: Settings) -> pb.ModelMetadataResponse:
    platform = PLATFORMS[settings.forward_backend][0]
    response = pb.ModelMetadataResponse(name=model.name, versions=[repository.VERSION], platform=platform)
    response.inputs.add(name=INPUT, datatype="UINT8", shape=[-1, model.height, model.width, 3])
    for name, shape in output_shapes(model).items():
        response.outputs.add(name=name, datatype=OUTPUTS[name][0], shape=shape)
    return response


def model_config(model: ServedModel, settings: Settings) -> pb.ModelConfigResponse:
    """Triton's view of the model: its tensors (without the batch dimension), batching and instances."""
    platform, backend = PLATFORMS[settings.forward_backend]
    batching = settings.batching
    config = model_config_pb2.ModelConfig(name=model.name, platform=platform, backend=backend,
                                          max_batch_size=batching.max_batch_size)
    config.input.add(name=INPUT, data_type=model_config_pb2.TYPE_UINT8, dims=[model.height, model.width, 3])
    for name, shape in output_shapes(model).items():
        config.output.add(name=name, data_type=model_config_pb2.DataType.Value(f"TYPE_{OUTPUTS[name][0]}"),
                          dims=shape[1:])
    config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    device = model.backend.device
    group = config.instance_group.add(name=f"{model.name}_0", count=len(model.backends))
    if device.type == "cuda":
        group.kind, group.gpus[:] = model_config_pb2.ModelInstanceGroup.KIND_GPU, [device.index or 0]
    else:
        group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    return pb.ModelConfigResponse(config=config)


def repository_index(engine: Engine, ready_only: bool) -> pb.RepositoryIndexResponse:
    """Every served model with its one version; all are READY while the engine is."""
    state = "READY" if engine.ready else "UNAVAILABLE"
    response = pb.RepositoryIndexResponse()
    if engine.ready or not ready_only:
        for name in engine.models:
            response.models.add(name=name, version=repository.VERSION, state=state)
    return response


def request_timeout(request: pb.ModelInferRequest) -> float | None:
    """Seconds from Triton's `timeout` request parameter (microseconds; 0 or absent: none)."""
    if TIMEOUT not in request.parameters:
        return None
    value = tensors.parameter_value(request.parameters[TIMEOUT])
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(f"parameter {TIMEOUT} must be a non-negative integer of microseconds, got {shown(value)}")
    return value / 1e6 or None


def message_limits(engine: Engine) -> tuple[int, int]:
    """(receive, send) byte limits: `max_message_bytes` when set, else the largest valid request (a full batch
    of FP32 images) and the largest response (every output) of the served models, plus room for the rest."""
    if engine.settings.max_message_bytes is not None:
        return engine.settings.max_message_bytes, engine.settings.max_message_bytes
    batch = engine.settings.batching.max_batch_size
    receive = max(batch * 3 * model.height * model.width * 4 for model in engine.models.values())
    send = max(batch * sum(np.dtype(tensors.DTYPES[OUTPUTS[name][0]]).itemsize * int(np.prod(shape[1:]))
                           for name, shape in output_shapes(model).items()) for model in engine.models.values())
    return receive + MESSAGE_OVERHEAD, send + MESSAGE_OVERHEAD


def _image(request: pb.ModelInferRequest, model: ServedModel, max_batch: int, max_side: int) -> np.ndarray:
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT:
        raise invalid(f"expected exactly one input named {INPUT}, got {listed([t.name for t in request.inputs])}")
    tensor = request.inputs[0]
    if tensor.parameters:
        raise invalid(f"input parameters are not supported: {listed(list(tensor.parameters))}")
    shape = list(tensor.shape)
    h, w = model.height, model.width
    if tensor.datatype == "UINT8":
        layout, expected = "[N,H,W,3]", [h, w, 3]
    elif tensor.datatype == "FP32":
        layout, expected = "[N,3,H,W]", [3, h, w]
    else:
        raise invalid(f"{INPUT}: datatype must be UINT8 [N,H,W,3] or FP32 [N,3,H,W], got {shown(tensor.datatype)}")
    if len(shape) != 4:
        raise invalid(f"{INPUT}: {tensor.datatype} must have rank 4 {layout}, got shape {shown(shape)}")
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
    if images.dtype == np.float32 and not (np.abs(images) <= FP32_LIMIT).all():
        raise invalid(f"{INPUT}: FP32 images must be finite normalised pixels within ±{FP32_LIMIT:g} "
                      "(NaN, infinite or larger values found)")
    return images


def _outputs(request: pb.ModelInferRequest) -> tuple[str, ...]:
    names: list[str] = []
    for output in request.outputs:
        if output.name not in OUTPUTS:
            raise invalid(f"unknown output {shown(output.name)}; known: {', '.join(OUTPUTS)}")
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
    values = {key: tensors.parameter_value(value) for key, value in request.parameters.items()
              if key not in (TIMEOUT, PRIORITY)}
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
