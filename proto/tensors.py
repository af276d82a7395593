"""Tensors and parameters of the protocol as numpy arrays and Python values, for server and client alike.

Raw contents are little-endian and row-major, BOOL one byte per element; typed contents use the field the
datatype names, narrow integers widened (as the protocol specifies).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from miscause.proto import grpc_service_pb2 as pb

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
CONTENTS_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def datatype_of(array: np.ndarray) -> str:
    """The protocol's name for an array's element type."""
    for name, dtype in DTYPES.items():
        if array.dtype == dtype or array.dtype == dtype.newbyteorder("="):
            return name
    raise ValueError(f"no protocol datatype for numpy {array.dtype}")


def element_count(shape: list[int] | tuple[int, ...]) -> int:
    """Elements in a tensor of `shape`; negative dimensions are rejected."""
    if any(d < 0 for d in shape):
        raise ValueError(f"shape {list(shape)} has a negative dimension")
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    """A tensor from its raw bytes, the byte length checked against datatype and shape."""
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise ValueError(f"{name}: unknown datatype {datatype!r}")
    expected = element_count(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{name}: shape {list(shape)} of {datatype} needs {expected} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def from_contents(name: str, datatype: str, shape: list[int], contents: pb.InferTensorContents) -> np.ndarray:
    """A tensor from typed contents, the element count checked against the shape."""
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise ValueError(f"{name}: datatype {datatype!r} cannot travel in typed contents; send raw bytes")
    values = getattr(contents, field)
    expected = element_count(shape)
    if len(values) != expected:
        raise ValueError(f"{name}: shape {list(shape)} needs {expected} values in {field}, got {len(values)}")
    array = np.asarray(values, dtype=np.float64 if datatype.startswith("FP") else None)
    if datatype.startswith(("UINT", "INT")):
        info = np.iinfo(DTYPES[datatype])
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(f"{name}: values outside the range of {datatype}")
    return array.astype(DTYPES[datatype]).reshape(shape)


def to_raw(array: np.ndarray) -> bytes:
    """Raw little-endian row-major bytes of an array."""
    dtype = DTYPES[datatype_of(array)]
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def parameter_value(parameter: pb.InferParameter) -> bool | int | float | str | None:
    """The Python value an InferParameter holds (None when it holds nothing)."""
    kind = parameter.WhichOneof("parameter_choice")
    return None if kind is None else getattr(parameter, kind)


def set_parameters(target: Mapping[str, pb.InferParameter],
                   values: Mapping[str, bool | int | float | str]) -> None:
    """Fill a protobuf parameter map from Python values (bool, int, float or str)."""
    for key, value in values.items():
        parameter = target[key]
        if isinstance(value, bool | np.bool_):
            parameter.bool_param = bool(value)
        elif isinstance(value, int | np.integer):
            parameter.int64_param = int(value)
        elif isinstance(value, float | np.floating):
            parameter.double_param = float(value)
        elif isinstance(value, str):
            parameter.string_param = value
        else:
            raise ValueError(f"parameter {key}: cannot send a {type(value).__name__}")
