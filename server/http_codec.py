"""The Open Inference Protocol's HTTP/REST bodies as the gRPC messages the service works on, and back.

An inference request body is JSON, or JSON followed by raw tensor bytes (Triton's binary tensor data extension:
the `Inference-Header-Content-Length` header gives the JSON's length, each binary input names its byte count in
the `binary_data_size` parameter). It becomes a `ModelInferRequest` (binary inputs as `raw_input_contents`, JSON
data as typed `contents`), so the checks of `protocol.decode` apply to both protocols alike. The transport
parameters (`binary_data`, `binary_data_size`, `binary_data_output`) are consumed here; every other parameter
goes through. Any other message becomes JSON with `to_json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from miscause.proto import grpc_service_pb2 as pb
from miscause.proto import tensors
from miscause.server.status import shown

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA, BINARY_DATA_SIZE, BINARY_DATA_OUTPUT = "binary_data", "binary_data_size", "binary_data_output"
INTEGER_KINDS, NUMBER_KINDS = "biu", "biuf"


class BodyError(ValueError):
    """A request body that is not a well-formed inference request; the message says what is wrong, quoting what
    the client sent in `status.shown`'s bounded form."""


@dataclass(frozen=True)
class Decoded:
    """An HTTP inference request as the service's message, and which outputs to answer in binary."""

    request: pb.ModelInferRequest
    binary_outputs: frozenset[str]
    binary_default: bool

    def binary(self, name: str) -> bool:
        return name in self.binary_outputs or self.binary_default


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise BodyError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _flag(parameters: dict, name: str, what: str) -> bool:
    value = parameters.pop(name, False)
    if not isinstance(value, bool):
        raise BodyError(f"{what}: parameter {name} must be true or false, got {shown(value)}")
    return value


def _set_parameters(target, values: dict, what: str) -> None:
    try:
        tensors.set_parameters(target, values)
    except (ValueError, TypeError) as error:
        raise BodyError(f"{what}: {error} (parameters are booleans, integers, numbers or strings)") from None


def _shape(value: object, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise BodyError(f"input {shown(name)}: shape must be a list of integers, got {shown(value)}")
    if any(d < 0 or d >= 1 << 62 for d in value):
        raise BodyError(f"input {shown(name)}: shape {value} has a dimension out of range")
    return value


def _contents(tensor: pb.ModelInferRequest.InferInputTensor, data: object) -> None:
    """JSON `data` (nested or flat lists, row-major) into the typed contents field of the tensor's datatype."""
    field = tensors.CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        raise BodyError(f"input {tensor.name}: datatype {shown(tensor.datatype)} cannot travel as JSON data")
    try:
        array = np.asarray(data)
    except (ValueError, RecursionError):
        raise BodyError(f"input {tensor.name}: data must be a list of numbers (nested lists of equal length)") \
            from None
    kinds = "b" if tensor.datatype == "BOOL" else INTEGER_KINDS if tensor.datatype.startswith(("INT", "UINT")) \
        else NUMBER_KINDS
    if array.size and array.dtype.kind not in kinds:
        raise BodyError(f"input {tensor.name}: data of {tensor.datatype} must hold "
                        f"{'booleans' if kinds == 'b' else 'integers' if kinds == INTEGER_KINDS else 'numbers'}")
    try:
        getattr(tensor.contents, field).extend(array.ravel().tolist())
    except (ValueError, TypeError) as error:
        raise BodyError(f"input {tensor.name}: data out of range for {tensor.datatype}: {error}") from None


def decode(model_name: str, model_version: str, body: bytes, header_length: str | None) -> Decoded:
    """The request a body carries, for the model the URL names; BodyError for anything malformed."""
    if header_length is None:
        header, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise BodyError(f"{HEADER_LENGTH} must be an integer, got {shown(header_length)}") from None
        if not 0 < length <= len(body):
            raise BodyError(f"{HEADER_LENGTH} is {length} but the body holds {len(body)} bytes")
        header, binary = body[:length], memoryview(body)[length:]
    try:
        document = _object(json.loads(header), "the request")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BodyError(f"the request is not JSON: {error}") from None
    except RecursionError:
        raise BodyError("the request's JSON nests too deeply") from None
    request = pb.ModelInferRequest(model_name=model_name, model_version=model_version)
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise BodyError(f"id must be a string, got {shown(request_id)}")
    request.id = request_id
    parameters = dict(_object(document.get("parameters", {}), "parameters"))
    binary_default = _flag(parameters, BINARY_DATA_OUTPUT, "the request")
    _set_parameters(request.parameters, parameters, "the request")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BodyError("inputs must be a non-empty list")
    offset = 0
    for entry in inputs:
        entry = _object(entry, "each input")
        name, datatype = entry.get("name"), entry.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise BodyError(f"each input needs a string name and datatype, got {shown(name)}, {shown(datatype)}")
        tensor = request.inputs.add(name=name, datatype=datatype, shape=_shape(entry.get("shape"), name))
        input_parameters = dict(_object(entry.get("parameters", {}), f"input {shown(name)}: parameters"))
        size = input_parameters.pop(BINARY_DATA_SIZE, None)
        _set_parameters(tensor.parameters, input_parameters, f"input {shown(name)}")
        if size is None:
            if "data" not in entry:
                raise BodyError(f"input {shown(name)}: needs data, or binary_data_size with the bytes after the JSON")
            _contents(tensor, entry["data"])
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BodyError(f"input {shown(name)}: binary_data_size must be a non-negative integer, got {shown(size)}")
        if "data" in entry:
            raise BodyError(f"input {shown(name)}: has both data and binary_data_size")
        if offset + size > len(binary):
            raise BodyError(f"input {shown(name)}: binary_data_size {size} runs past the {len(binary) - offset} binary "
                            "bytes left in the body")
        request.raw_input_contents.append(bytes(binary[offset:offset + size]))
        offset += size
    if offset != len(binary):
        raise BodyError(f"the body holds {len(binary) - offset} binary bytes no input's binary_data_size claims")
    binary_outputs = set()
    outputs = document.get("outputs", [])
    if not isinstance(outputs, list):
        raise BodyError("outputs must be a list")
    for entry in outputs:
        entry = _object(entry, "each output")
        name = entry.get("name")
        if not isinstance(name, str):
            raise BodyError(f"each output needs a string name, got {shown(name)}")
        output_parameters = dict(_object(entry.get("parameters", {}), f"output {shown(name)}: parameters"))
        if _flag(output_parameters, BINARY_DATA, f"output {shown(name)}"):
            binary_outputs.add(name)
        _set_parameters(request.outputs.add(name=name).parameters, output_parameters, f"output {shown(name)}")
    return Decoded(request, frozenset(binary_outputs), binary_default)


def encode(response: pb.ModelInferResponse, decoded: Decoded) -> tuple[bytes, int | None]:
    """(body, JSON header length or None): outputs asked for in binary follow the JSON as raw bytes, the rest
    travel as flat JSON lists."""
    outputs, chunks = [], []
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if decoded.binary(tensor.name):
            entry["parameters"] = {BINARY_DATA_SIZE: len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensors.from_raw(tensor.name, tensor.datatype, list(tensor.shape), raw).ravel().tolist()
        outputs.append(entry)
    header = json.dumps({"model_name": response.model_name, "model_version": response.model_version,
                         "id": response.id, "outputs": outputs}).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def to_json(message: Message) -> dict:
    """A protobuf message as Triton's HTTP/REST JSON: field names as in the .proto, every scalar field (at its
    default too, as Triton writes them), 64-bit integers as numbers (not strings, as protobuf's own JSON
    mapping writes them), enums by name; unset message fields and oneof members left out."""
    body = {}
    for field in message.DESCRIPTOR.fields:
        present = field.is_repeated or field.message_type is None and field.containing_oneof is None
        if present or message.HasField(field.name):
            body[field.name] = _value(field, getattr(message, field.name))
    return body


def _value(field: FieldDescriptor, value: object) -> object:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {key: _single(value_field, item) for key, item in value.items()}
    if field.is_repeated:
        return [_single(field, item) for item in value]
    return _single(field, value)


def _single(field: FieldDescriptor, value: object) -> object:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.hex()
    return value
