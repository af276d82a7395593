"""The protocol package: generated modules current with the .proto files, messages identical field for field
to the published Open Inference Protocol (as tritonclient ships it), and the tensor codec."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from miscause.proto import generate, model_config_pb2, tensors
from miscause.proto import grpc_service_pb2 as pb

DESCRIBE = r"""
import json, sys
from google.protobuf import descriptor_pb2
from {module} import DESCRIPTOR

def fields(message):
    out = {{f.name: [f.number, f.type, f.label, f.type_name.rsplit(".", 1)[-1],
                    f.oneof_index if f.HasField("oneof_index") else None] for f in message.field}}
    for nested in message.nested_type:
        out.update({{nested.name + "." + k: v for k, v in fields(nested).items()}})
    return out

proto = descriptor_pb2.FileDescriptorProto()
DESCRIPTOR.CopyToProto(proto)
names = set(sys.argv[1].split(","))
print(json.dumps({{
    "package": proto.package,
    "messages": {{m.name: fields(m) for m in proto.message_type if m.name in names}},
    "methods": {{m.name: [m.input_type, m.output_type, m.client_streaming, m.server_streaming]
                for s in proto.service if s.name == "GRPCInferenceService" for m in s.method
                if m.name in sys.argv[2].split(",")}},
}}))
"""


def describe(module: str, messages: list[str], methods: list[str]) -> dict:
    """Descriptors of a generated module, read in a fresh interpreter (tritonclient's and ours share names)."""
    done = subprocess.run([sys.executable, "-c", DESCRIBE.format(module=module), ",".join(messages),
                           ",".join(methods)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_generated_modules_match_the_proto_files(tmp_path):
    written = generate.generate(tmp_path)
    assert [p.name for p in written] == generate.generated_names()
    for path in written:
        committed = generate.HERE / path.name
        assert committed.read_text() == path.read_text(), f"{committed.name} is stale: run `make proto`"


def test_generated_modules_import_each_other_through_the_package():
    grpc_module = (generate.HERE / "grpc_service_pb2_grpc.py").read_text()
    assert "from miscause.proto import grpc_service_pb2" in grpc_module


def ours_and_published(module, published: str) -> tuple[list[str], list[str], dict, dict]:
    """(message names, method names, our descriptors, tritonclient's) of one generated module."""
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient[grpc] not installed")
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    messages = [m.name for m in proto.message_type]
    methods = [m.name for service in proto.service for m in service.method]
    return messages, methods, describe(module.__name__, messages, methods), describe(published, messages, methods)


def test_messages_and_methods_match_the_published_protocol():
    messages, methods, ours, published = ours_and_published(pb, "tritonclient.grpc.service_pb2")
    assert ours["package"] == published["package"] == "inference"
    assert set(published["messages"]) == set(messages) and len(methods) == 12
    assert ours == published


def test_model_config_is_a_wire_compatible_part_of_tritons():
    """Each ModelConfig field declared here has the published name, number, type and label."""
    messages, _, ours, published = ours_and_published(model_config_pb2, "tritonclient.grpc.model_config_pb2")
    assert ours["package"] == published["package"] == "inference"
    assert {"ModelConfig", "ModelInput", "ModelOutput", "ModelDynamicBatching", "ModelInstanceGroup"} <= set(messages)
    for message, fields in ours["messages"].items():
        for name, (number, kind, label, type_name, _) in fields.items():
            assert published["messages"][message][name][:4] == [number, kind, label, type_name], (message, name)


@pytest.mark.parametrize("datatype", ["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64"])
def test_raw_round_trip(datatype):
    array = (np.arange(24).reshape(2, 3, 4) % 7).astype(tensors.DTYPES[datatype])
    assert tensors.datatype_of(array) == datatype
    back = tensors.from_raw("X", datatype, [2, 3, 4], tensors.to_raw(array))
    np.testing.assert_array_equal(back, array)


def test_raw_length_and_typed_contents_are_checked():
    with pytest.raises(ValueError, match="needs 24 bytes, got 23"):
        tensors.from_raw("X", "UINT8", [2, 3, 4], bytes(23))
    with pytest.raises(ValueError, match="unknown datatype"):
        tensors.from_raw("X", "COMPLEX", [1], bytes(8))
    contents = pb.InferTensorContents(uint_contents=[1, 2, 300])
    with pytest.raises(ValueError, match="outside the range of UINT8"):
        tensors.from_contents("X", "UINT8", [3], contents)
    with pytest.raises(ValueError, match="needs 4 values"):
        tensors.from_contents("X", "UINT8", [4], contents)
    np.testing.assert_array_equal(tensors.from_contents("X", "UINT32", [3], contents), [1, 2, 300])


def test_parameters_round_trip():
    request = pb.ModelInferRequest()
    values = {"flag": True, "box": 3, "top_percent": 7.5, "saliency_method": "gradient"}
    tensors.set_parameters(request.parameters, values)
    assert {k: tensors.parameter_value(v) for k, v in request.parameters.items()} == values
    with pytest.raises(ValueError, match="cannot send a list"):
        tensors.set_parameters(request.parameters, {"fill": [0.0]})
