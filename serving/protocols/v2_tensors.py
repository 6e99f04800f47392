"""V2 inference requests: JSON and binary tensors in, a checked Table out (the tensors: README "The HTTP contract")."""

# The protocol has no null: a missing value can only be NaN in a float tensor, and JSON has no NaN,
# so only binary float data (tritonclient's default) can carry one.

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from itertools import chain

import numpy as np

from serving.core import MAX_ABS_FEATURE, check_row_count, first_out_of_range
from serving.errors import RequestError
from serving.protocols.decode import load_json_object
from serving.schema import Table, TableSchema

INPUT_NAME = "input"
OUTPUT_NAMES = ("label", "probabilities", "class_index")

# The datatypes a numeric column or the feature matrix accepts, as little-endian numpy types.
NUMERIC_DATATYPES = {"FP64": np.dtype("<f8"), "FP32": np.dtype("<f4"),
                     "INT64": np.dtype("<i8"), "INT32": np.dtype("<i4")}
FLOAT_DATATYPES = frozenset({"FP64", "FP32"})
TEXT_DATATYPE = "BYTES"
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})
_EXAMPLE = '{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [...]}]}'
# What tensor data must be, as the refusal of a NaN or Infinity JSON literal says.
_VALUES = "tensor data must be finite numbers"


@dataclass(frozen=True)
class InferRequest:
    """A checked inference request: the rows to score, the id to echo, the outputs asked for."""

    table: Table
    id: str | None
    outputs: list[str] | None  # None: every output


@dataclass
class _Tensor:
    """One input tensor as declared; its values are read once its datatype and shape are checked."""

    name: str
    datatype: str
    shape: list[int]
    data: object  # the JSON `data`, or None when the values are binary
    binary_size: int | None
    raw: bytes = b""


def _bad(message: str, reason: str) -> RequestError:
    return RequestError(400, message, reason)


def _show(value: object) -> str:
    """A JSON value, shortened for an error message."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


# Inference request --------------------------------------------------------------------------

def parse_infer(body: bytes, *, schema: TableSchema, max_rows: int,
                header_length: int | None = None) -> InferRequest:
    """The rows of an inference body; header_length: its Inference-Header-Content-Length (binary data follows)."""
    if header_length is None:
        header, binary = body, b""
    else:
        if not 0 < header_length <= len(body):
            raise _bad(f"the Inference-Header-Content-Length header ({header_length}) does not fit "
                       f"a body of {len(body)} bytes", "bad_header_length")
        header, binary = body[:header_length], body[header_length:]
    try:
        document = load_json_object(header, example=_EXAMPLE, values=_VALUES)
    except RequestError as error:
        if header_length is None and error.reason in ("malformed_json", "bad_encoding") \
                and b'"binary_data_size"' in body:
            raise _bad("the body holds binary tensor data but no Inference-Header-Content-Length "
                       "header says where its JSON part ends", "binary_without_header") from None
        raise
    extra = sorted(set(document) - _REQUEST_KEYS)
    if extra:
        raise _bad(f"unknown key(s) {', '.join(map(repr, extra))}: an inference request holds "
                   "'inputs' and optionally 'id', 'parameters' and 'outputs'", "unknown_keys")
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        raise _bad("'id' must be a string", "bad_id")
    if not isinstance(document.get("parameters", {}), dict):
        raise _bad("'parameters' must be an object", "bad_parameters")
    if "inputs" not in document:
        raise _bad(f"the 'inputs' key is missing; send {_EXAMPLE}", "missing_inputs")
    inputs = document["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise _bad("'inputs' must be a non-empty list of tensors", "missing_inputs")
    tensors = [_read_tensor(tensor, index) for index, tensor in enumerate(inputs)]
    names = [tensor.name for tensor in tensors]
    duplicated = next((name for name in names if names.count(name) > 1), None)
    if duplicated is not None:
        raise _bad(f"input {duplicated!r} is given more than once", "duplicate_input")
    _attach_binary(tensors, binary)
    if schema.all_numeric and len(tensors) == 1:
        table = _matrix_table(tensors[0], schema=schema, max_rows=max_rows)
    else:
        table = _column_table(tensors, schema=schema, max_rows=max_rows)
    return InferRequest(table=table, id=request_id, outputs=_requested_outputs(document.get("outputs")))


def _read_tensor(tensor: object, index: int) -> _Tensor:
    """The declaration of one input: name, datatype, shape, and where its values are."""
    if not isinstance(tensor, dict):
        raise _bad(f"input {index} is not an object with 'name', 'shape', 'datatype' and 'data'", "bad_tensor")
    name = tensor.get("name")
    if type(name) is not str:
        raise _bad(f"input {index} has no 'name' string", "bad_tensor")
    extra = sorted(set(tensor) - _INPUT_KEYS)
    if extra:
        raise _bad(f"input {name!r} has unknown key(s) {', '.join(map(repr, extra))}", "unknown_keys")
    datatype = tensor.get("datatype")
    if type(datatype) is not str:
        raise _bad(f"input {name!r} has no 'datatype' string", "bad_tensor")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(f"input {name!r}: 'shape' must be a list of non-negative integers", "bad_shape")
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _bad(f"input {name!r}: 'parameters' must be an object", "bad_parameters")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if type(binary_size) is not int or binary_size < 0:
            raise _bad(f"input {name!r}: 'binary_data_size' must be a non-negative integer", "bad_binary")
        if "data" in tensor:
            raise _bad(f"input {name!r} has both 'data' and a binary_data_size parameter", "bad_binary")
    elif "data" not in tensor:
        raise _bad(f"input {name!r} has no 'data'", "missing_data")
    return _Tensor(name=name, datatype=datatype, shape=shape, data=tensor.get("data"), binary_size=binary_size)


def _attach_binary(tensors: list[_Tensor], binary: bytes) -> None:
    """Hand each binary input its bytes, in the order of the inputs."""
    expected = sum(t.binary_size for t in tensors if t.binary_size is not None)
    if expected != len(binary):
        raise _bad(f"the inputs' binary_data_size parameters add up to {expected} bytes, but "
                   f"{len(binary)} bytes of binary data follow the JSON", "bad_binary")
    offset = 0
    for tensor in tensors:
        if tensor.binary_size is not None:
            tensor.raw = binary[offset:offset + tensor.binary_size]
            offset += tensor.binary_size


def _requested_outputs(outputs: object) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise _bad("'outputs' must be a list of objects with a 'name'", "bad_outputs")
    names = []
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or type(output.get("name")) is not str:
            raise _bad(f"output {index} is not an object with a 'name' string", "bad_outputs")
        name = output["name"]
        extra = sorted(set(output) - _OUTPUT_KEYS)
        if extra:
            raise _bad(f"output {name!r} has unknown key(s) {', '.join(map(repr, extra))}", "unknown_keys")
        if not isinstance(output.get("parameters", {}), dict):
            raise _bad(f"output {name!r}: 'parameters' must be an object", "bad_parameters")
        if name not in OUTPUT_NAMES:
            raise _bad(f"unknown output {name!r}; this model's outputs are {', '.join(OUTPUT_NAMES)}", "unknown_output")
        if name in names:
            raise _bad(f"output {name!r} is asked for more than once", "duplicate_output")
        names.append(name)
    return names or None  # no outputs named: all of them, as the protocol says


def _check_rows(rows: int, *, max_rows: int) -> None:
    if rows == 0:
        raise _bad("there are no rows to score (the first dimension of the shape is 0)", "empty_features")
    check_row_count(rows, max_rows=max_rows, status=400)


def _matrix_table(tensor: _Tensor, *, schema: TableSchema, max_rows: int) -> Table:
    """One [rows, n_features] tensor of numbers for an all-numeric model."""
    n_features = len(schema.features)
    if tensor.datatype not in NUMERIC_DATATYPES:
        raise _bad(f"input {tensor.name!r} has datatype {tensor.datatype}; this model takes "
                   "FP64 or FP32 (or INT64, INT32)", "wrong_datatype")
    shape = tensor.shape
    if not (len(shape) == 2 and shape[1] == n_features or len(shape) == 1 and n_features == 1):
        raise _bad(f"input {tensor.name!r} has shape {shape}; this model takes shape [-1, {n_features}] "
                   f"(rows of {n_features} features)", "wrong_shape")
    rows = shape[0]
    _check_rows(rows, max_rows=max_rows)
    values = _numbers(tensor, width=n_features)
    return Table.from_numbers(values.reshape(rows, n_features))


def _column_table(tensors: list[_Tensor], *, schema: TableSchema, max_rows: int) -> Table:
    """One [rows] (or [rows, 1]) tensor per column, named as the column."""
    by_name = {tensor.name: tensor for tensor in tensors}
    expected = schema.feature_names
    listed = ", ".join(map(repr, expected))
    unknown = [name for name in by_name if name not in expected]
    if unknown:
        hint = f"one input named {INPUT_NAME!r}, or " if schema.all_numeric else ""
        raise _bad(f"unknown input {unknown[0]!r}; this model takes {hint}one input per column: {listed}",
                   "unknown_input")
    missing = [name for name in expected if name not in by_name]
    if missing:
        raise _bad(f"input {missing[0]!r} is missing; this model takes one input per column: {listed}",
                   "missing_input")
    numeric_names, text_names = set(schema.numeric), set(schema.categorical)
    for tensor in tensors:
        if tensor.name in numeric_names and tensor.datatype not in NUMERIC_DATATYPES:
            raise _bad(f"input {tensor.name!r} has datatype {tensor.datatype}; this numeric column takes "
                       "FP64 or FP32 (or INT64, INT32)", "wrong_datatype")
        if tensor.name in text_names and tensor.datatype != TEXT_DATATYPE:
            raise _bad(f"input {tensor.name!r} has datatype {tensor.datatype}; this text column takes BYTES",
                       "wrong_datatype")
        if not (len(tensor.shape) == 1 or len(tensor.shape) == 2 and tensor.shape[1] == 1):
            raise _bad(f"input {tensor.name!r} has shape {tensor.shape}; a column takes shape [-1] or [-1, 1]",
                       "wrong_shape")
    rows = {tensor.name: tensor.shape[0] for tensor in tensors}
    if len(set(rows.values())) != 1:
        counts = ", ".join(f"{name!r}: {count}" for name, count in rows.items())
        raise _bad(f"the inputs have different numbers of rows ({counts})", "wrong_shape")
    count = tensors[0].shape[0]
    _check_rows(count, max_rows=max_rows)
    numeric = np.empty((count, len(schema.numeric)))
    for j, name in enumerate(schema.numeric):
        numeric[:, j] = _numbers(by_name[name], width=1)
    text = np.empty((count, len(schema.categorical)), dtype=object)
    for j, name in enumerate(schema.categorical):
        text[:, j] = _strings(by_name[name])
    return Table(numeric=numeric, categorical=text)


def _flat_data(tensor: _Tensor) -> list:
    """The JSON data of a tensor, flattened row-major; flat or nested as the shape."""
    data, shape = tensor.data, tensor.shape
    if not isinstance(data, list):
        raise _bad(f"input {tensor.name!r}: 'data' must be a list of values", "bad_data")
    if len(shape) == 2 and data and type(data[0]) is list:  # nested: one list per row
        if len(data) != shape[0] or not all(type(row) is list and len(row) == shape[1] for row in data):
            raise _bad(f"input {tensor.name!r}: the nested 'data' is not shaped {shape} "
                       f"({shape[0]} lists of {shape[1]} values)", "wrong_length")
        data = list(chain.from_iterable(data))
    size = math.prod(shape)
    if len(data) != size:
        raise _bad(f"input {tensor.name!r} has {len(data)} values; shape {shape} needs {size}", "wrong_length")
    return data


def _numbers(tensor: _Tensor, *, width: int) -> np.ndarray:
    """The values of a numeric tensor as a flat float64 array; NaN (missing) only from binary floats."""
    datatype = tensor.datatype
    is_float = datatype in FLOAT_DATATYPES
    if tensor.binary_size is None:
        values = _flat_data(tensor)
        allowed = (int, float) if is_float else (int,)
        kinds = set(map(type, values))
        if not kinds.issubset(allowed):  # bool is an int subclass: compared by exact type
            bad = next(v for v in values if type(v) not in allowed)
            wanted = "a number" if is_float else f"an integer ({datatype})"
            raise _bad(f"input {tensor.name!r} holds {_show(bad)}, which is not {wanted}", "not_a_number")
        try:
            X = np.array(values, dtype=np.float64 if is_float else NUMERIC_DATATYPES[datatype])
        except OverflowError:
            raise _bad(f"input {tensor.name!r} holds a value that does not fit {datatype}", "not_finite") from None
        X = X.astype(np.float64, copy=False)
    else:
        size = math.prod(tensor.shape)
        dtype = NUMERIC_DATATYPES[datatype]
        if len(tensor.raw) != size * dtype.itemsize:
            raise _bad(f"input {tensor.name!r} has {len(tensor.raw)} bytes of binary data; shape {tensor.shape} "
                       f"of {datatype} needs {size * dtype.itemsize}", "wrong_length")
        X = np.frombuffer(tensor.raw, dtype=dtype).astype(np.float64)
    # JSON numbers sent as FP32 must fit a float32 too, as the tensor they stand for.
    json_fp32 = datatype == "FP32" and tensor.binary_size is None
    row = first_out_of_range(X.reshape(-1, width), limit=_FLOAT32_MAX if json_fp32 else MAX_ABS_FEATURE)
    if row is not None:
        raise _bad(f"input {tensor.name!r}, row {row} holds a value outside the accepted range "
                   f"-{MAX_ABS_FEATURE:g} to {MAX_ABS_FEATURE:g}" + (" (or FP32's)" if datatype == "FP32" else ""),
                   "out_of_range")
    if json_fp32:
        X = X.astype(np.float32).astype(np.float64)  # the values an FP32 tensor holds
    return X


def _strings(tensor: _Tensor) -> list[str]:
    """The values of a BYTES tensor as text."""
    if tensor.binary_size is None:
        values = _flat_data(tensor)
        if not set(map(type, values)) <= {str}:  # one C-level pass, not a Python loop per value
            bad = next(v for v in values if type(v) is not str)
            if bad is None:
                raise _bad(f"input {tensor.name!r} holds null: a BYTES tensor cannot carry a missing value",
                           "not_text")
            raise _bad(f"input {tensor.name!r} holds {_show(bad)}, which is not text (BYTES values are strings)",
                       "not_text")
        return values
    size, raw, offset, values = math.prod(tensor.shape), tensor.raw, 0, []
    while offset < len(raw) and len(values) < size:
        if offset + 4 > len(raw):
            break
        (length,) = struct.unpack_from("<I", raw, offset)
        element = raw[offset + 4:offset + 4 + length]
        if len(element) != length:
            break
        try:
            values.append(element.decode("utf-8"))
        except UnicodeDecodeError:
            raise _bad(f"input {tensor.name!r}, element {len(values)} is not valid UTF-8 text", "bad_encoding") from None
        offset += 4 + length
    if len(values) != size or offset != len(raw):
        raise _bad(f"input {tensor.name!r}: the binary data is not {size} length-prefixed BYTES elements "
                   f"for shape {tensor.shape}", "wrong_length")
    return values


