"""Parameter files: Mithril parameters and state in the safetensors format, without pickle.

File layout (a plain safetensors file, readable by any safetensors tool):

- each parameter is a tensor named by its Mithril key (``conv2d.weight``);
- each state entry (BatchNorm running statistics) is a tensor named ``state/<key>``
  (``state/batchnorm2d.running_mean``); a parameter key may therefore not start with ``state/``;
- arrays are stored as NumPy writes them; bfloat16 (which NumPy lacks) is stored exactly as
  float32 and recorded in the metadata, so loading gives bfloat16 back;
- the metadata (``__metadata__``, strings only) holds the caller's ``metadata`` plus entries
  starting with ``mithril.``: the format version, the key order, the original dtypes and a
  SHA-256 digest over names, dtypes, shapes, bytes and metadata. Loading checks the digest, so
  a flipped byte anywhere in the file is reported instead of giving wrong numbers.

Writes are atomic: the file is written to a temporary file in the same directory and moved over
the destination with ``os.replace``; a failure mid-write leaves the old file untouched.

Loading never runs code from the file: the header is JSON, the payload raw bytes. A truncated,
corrupted or tampered file raises :class:`ParamsFileError` naming the path and the problem.

>>> import os, tempfile
>>> import numpy as np
>>> from mithril.io import save_params, load_params
>>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
>>> save_params(path, {"linear.weight": np.ones((2, 3), np.float32)},
...             state={"bn.running_mean": np.zeros(2, np.float32)}, metadata={"epoch": "3"})
>>> params, state = load_params(path)
>>> params["linear.weight"].shape, sorted(state)
((2, 3), ['bn.running_mean'])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import (
    ArgumentTypeError,
    InputError,
    ShapeMismatchError,
    TypeMismatchError,
    missing_package,
)
from ..framework import types as T

__all__ = ["ParamsFileError", "load_params", "read_metadata", "save_params"]

STATE_PREFIX = "state/"
_FORMAT = "mithril-params/1"
_RESERVED = "mithril."
_META_FORMAT = "mithril.format"
_META_KEYS = "mithril.keys"
_META_DTYPES = "mithril.dtypes"
_META_DIGEST = "mithril.sha256"
_MAX_HEADER = 100 * 1024 * 1024  # the limit safetensors itself applies

#: safetensors dtype codes -> (NumPy dtype, bytes per element)
_ST_DTYPES: dict[str, tuple[Any, int]] = {
    "F16": (np.float16, 2), "F32": (np.float32, 4), "F64": (np.float64, 8),
    "I8": (np.int8, 1), "I16": (np.int16, 2), "I32": (np.int32, 4), "I64": (np.int64, 8),
    "U8": (np.uint8, 1), "U16": (np.uint16, 2), "U32": (np.uint32, 4), "U64": (np.uint64, 8),
    "BOOL": (np.bool_, 1), "BF16": (None, 2),
}


from ..errors import ParamsFileError  # noqa: E402  (re-exported here)


def _fspath(path: Any, fn: str) -> Any:
    """``os.fspath(path)``, or an error naming the argument (not Python's bare TypeError)."""
    try:
        return os.fspath(path)
    except TypeError:
        raise ArgumentTypeError(f"{fn}: path must be a str or os.PathLike such as "
                                f"pathlib.Path, got {type(path).__name__} {path!r}") from None


# ----------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------
def save_params(path: str | os.PathLike[str], params: Mapping[str, Any],
                state: Mapping[str, Any] | None = None,
                metadata: Mapping[str, str] | None = None, *, backend: Any = None) -> None:
    """Write ``params`` (and ``state``) to a safetensors file at ``path``, atomically.

    Arrays may come from any backend (NumPy, PyTorch, JAX, MLX); they are copied to NumPy with
    ``backend.to_numpy`` when ``backend`` is given, otherwise by looking at their type.
    ``metadata`` is a dict of strings stored in the file (keys starting with ``mithril.`` are
    reserved). Read it back with :func:`read_metadata`.

    >>> import os, tempfile
    >>> import mithril as ml
    >>> from mithril.io import save_params
    >>> from mithril.models import Linear
    >>> backend = ml.NumpyBackend()
    >>> pm = ml.compile(Linear(4, input_size=3), backend)
    >>> path = os.path.join(tempfile.mkdtemp(), "linear.safetensors")
    >>> save_params(path, pm.randomize_params(), metadata={"note": "demo"})
    >>> os.path.exists(path)
    True
    """
    path = _fspath(path, "save_params")
    st = _safetensors_numpy()
    if not isinstance(params, Mapping):
        raise TypeMismatchError(f"params must be a dict {{key: array}}, got "
                                f"{type(params).__name__}")
    if state is not None and not isinstance(state, Mapping):
        raise TypeMismatchError(f"state must be a dict {{key: array}} or None, got "
                                f"{type(state).__name__}")
    user_meta = _check_user_metadata(metadata)
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for key, value in params.items():
        _check_key(key, "params")
        if key.startswith(STATE_PREFIX):
            raise InputError(f"parameter key {key!r} starts with {STATE_PREFIX!r}, which "
                             "parameter files reserve for state entries; rename the terminal")
        tensors[key], dtypes[key] = _to_numpy(value, key, backend)
    for key, value in (state or {}).items():
        _check_key(key, "state")
        name = STATE_PREFIX + key
        tensors[name], dtypes[name] = _to_numpy(value, key, backend)
    meta = dict(user_meta)
    meta[_META_FORMAT] = _FORMAT
    meta[_META_KEYS] = json.dumps({"params": list(params),
                                   "state": None if state is None else list(state)})
    special = {name: dt for name, dt in dtypes.items() if dt != tensors[name].dtype.name}
    if special:
        meta[_META_DTYPES] = json.dumps(special, sort_keys=True)
    meta[_META_DIGEST] = _digest(tensors, meta)
    _write_atomic(path, lambda tmp: st.save_file(tensors, tmp, metadata=meta))


def _check_key(key: Any, what: str) -> None:
    if not isinstance(key, str) or not key:
        raise InputError(f"{what} keys must be non-empty strings, got {key!r}")
    if key == "__metadata__":
        raise InputError(f"{what} key '__metadata__' is reserved by the safetensors format")


def _check_user_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeMismatchError(f"metadata must be a dict of strings, got "
                                f"{type(metadata).__name__}")
    out = {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeMismatchError(
                f"metadata must map strings to strings; entry {k!r}: {v!r} is "
                f"{type(k).__name__} -> {type(v).__name__} (use json.dumps for structures)")
        if k.startswith(_RESERVED):
            raise InputError(f"metadata key {k!r}: keys starting with {_RESERVED!r} are "
                             "reserved for Mithril")
        out[k] = v
    return out


def _to_numpy(value: Any, key: str, backend: Any) -> tuple[np.ndarray, str]:
    """``value`` as a contiguous NumPy array, and the name of its original dtype."""
    dtype_name = _dtype_name(value)
    if backend is not None:
        arr = np.asarray(backend.to_numpy(value))
    else:
        arr = _generic_to_numpy(value)
    if arr.dtype.name == "bfloat16":  # a JAX / ml_dtypes array
        arr = arr.astype(np.float32)
    if arr.dtype.kind not in "fiub" or arr.dtype.name not in {
            "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
            "uint16", "uint32", "uint64", "bool"}:
        raise TypeMismatchError(f"{key!r} has dtype {arr.dtype}, which a parameter file cannot "
                                "hold; use a float, int or bool array")
    if dtype_name is None:
        dtype_name = arr.dtype.name
    return np.ascontiguousarray(arr), dtype_name


def _dtype_name(value: Any) -> str | None:
    dt = getattr(value, "dtype", None)
    if dt is None:
        return None
    try:
        return T.as_dtype(dt).name
    except TypeError:
        return None


def _generic_to_numpy(value: Any) -> np.ndarray:
    module = type(value).__module__.split(".")[0]
    if module == "torch":
        x = value.detach()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.cpu().numpy()
    if module == "mlx":
        if "bfloat16" in str(value.dtype):
            import mlx.core as mx

            value = value.astype(mx.float32)
        return np.array(value)
    return np.asarray(value)


def _write_atomic(path: str, write: Any) -> None:
    """Call ``write(tmp_path)`` for a temporary file next to ``path``, then move it over."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"cannot save to {path!r}: directory {directory!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".mithril-", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where possible
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _digest(tensors: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = tensors[name]
        h.update(json.dumps([name, arr.dtype.name, list(arr.shape)]).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    for k in sorted(meta):
        if k != _META_DIGEST:
            h.update(json.dumps([k, meta[k]]).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The caller's metadata stored in a parameter file (without Mithril's own entries).

    Reads and checks the header only.

    >>> import os, tempfile
    >>> import numpy as np
    >>> from mithril.io import save_params, read_metadata
    >>> path = os.path.join(tempfile.mkdtemp(), "p.safetensors")
    >>> save_params(path, {"w": np.zeros(2, np.float32)}, metadata={"epoch": "7"})
    >>> read_metadata(path)
    {'epoch': '7'}
    """
    path = _fspath(path, "read_metadata")
    data = _read_bytes(path)
    _, meta, _ = _parse_header(path, data)
    return {k: v for k, v in meta.items() if not k.startswith(_RESERVED)}


def load_params(path: str | os.PathLike[str], target: Any = None, *, allow_cast: bool = False,
                verify: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a parameter file: ``(params, state)``.

    ``target`` decides what comes back:

    - ``None``: NumPy arrays as stored (bfloat16 entries come back as exact float32);
    - a backend (``ml.TorchBackend()``): that backend's arrays;
    - a compiled model: that backend's arrays, after checking that the keys, shapes and dtypes
      are exactly the model's parameters (and state, when the file has state). Every problem
      is reported at once: :class:`~mithril.InputError` for missing or unknown keys,
      :class:`~mithril.ShapeMismatchError` for shapes, :class:`~mithril.TypeMismatchError` for
      dtypes. Nothing is returned unless everything fits.

    Floats must have the backend's precision unless ``allow_cast=True`` (e.g. to load float64
    parameters into a float32 model). A file without state gives ``state == {}`` (keep the
    compiled model's own ``.state``). ``verify`` checks Mithril's SHA-256 digest (files written
    by other tools have none and are loaded without it).

    >>> import os, tempfile
    >>> import mithril as ml
    >>> from mithril.io import save_params, load_params
    >>> from mithril.models import Linear
    >>> pm = ml.compile(Linear(4, input_size=3), ml.NumpyBackend())
    >>> path = os.path.join(tempfile.mkdtemp(), "linear.safetensors")
    >>> save_params(path, pm.randomize_params())
    >>> params, state = load_params(path, pm)
    >>> sorted(params), state
    (['bias', 'weight'], {})
    """
    path = _fspath(path, "load_params")
    data = _read_bytes(path)
    entries, meta, _ = _parse_header(path, data)
    arrays = _decode(path, data, entries)
    # a file Mithril wrote always has a digest: hash what was read and compare
    written_by_us = _META_DIGEST in meta or _META_FORMAT in meta
    if verify and written_by_us and meta.get(_META_DIGEST) != _digest(arrays, meta):
        raise ParamsFileError(f"parameter file {path!r} is corrupted: its content does not "
                              "match the SHA-256 digest recorded when it was written")
    original = _json_meta(path, meta, _META_DTYPES, {})
    order = _json_meta(path, meta, _META_KEYS, None)
    params_np, state_np = _split(path, arrays, order)
    dtypes = {name: original.get(name, arr.dtype.name) for name, arr in arrays.items()}
    if target is None:
        return params_np, state_np
    from ..framework.physical.compiled import CompiledModel

    if isinstance(target, CompiledModel):
        return _into_compiled(path, target, params_np, state_np, dtypes, allow_cast)
    if hasattr(target, "array") and hasattr(target, "to_numpy"):
        return (_convert(path, target, params_np, "", dtypes, allow_cast),
                _convert(path, target, state_np, STATE_PREFIX, dtypes, allow_cast))
    raise TypeMismatchError(f"load_params target must be None, a backend or a compiled model, "
                            f"got {type(target).__name__}")


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ParamsFileError(f"parameter file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ParamsFileError(f"parameter file {path!r} is a directory") from None
    except OSError as err:
        raise ParamsFileError(f"cannot read parameter file {path!r}: {err}") from None


def _parse_header(path: str, data: bytes) -> tuple[dict[str, dict[str, Any]], dict[str, str],
                                                   int]:
    """Validate the safetensors header: ``(entries, metadata, start of the payload)``."""
    def bad(problem: str) -> ParamsFileError:
        return ParamsFileError(f"parameter file {path!r} is not a valid safetensors file "
                               f"({len(data)} bytes): {problem}")

    if len(data) < 8:
        raise bad("it is shorter than the 8-byte header length (truncated?)")
    n = int.from_bytes(data[:8], "little")
    if n > _MAX_HEADER or 8 + n > len(data):
        raise bad(f"the header claims {n} bytes but the file holds {len(data) - 8} after the "
                  "length (truncated or corrupted)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad(f"the header is not valid JSON ({err}); the file is corrupted") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise bad("'__metadata__' is not a map of strings")
    start = 8 + n
    payload = len(data) - start
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"entry {name!r} is malformed: {entry!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise bad(f"entry {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"entry {name!r} has an invalid shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise bad(f"entry {name!r} has invalid data offsets {offsets!r}")
        size = _ST_DTYPES[dtype][1] * math.prod(shape)
        if offsets[1] - offsets[0] != size:
            raise bad(f"entry {name!r} ({dtype}, shape {shape}) needs {size} bytes but its "
                      f"offsets {offsets} span {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            raise bad(f"entry {name!r} starts at byte {begin}, expected {end} (overlapping or "
                      "gapped data)")
        end = stop
    if end != payload:
        raise bad(f"the entries cover {end} bytes of data but the file holds {payload} "
                  "(truncated or extended)")
    return header, meta, start


def _decode(path: str, data: bytes, entries: Mapping[str, Any]) -> dict[str, np.ndarray]:
    has_bf16 = any(e["dtype"] == "BF16" for e in entries.values())
    if not has_bf16:
        st = _safetensors_numpy()
        try:
            return dict(st.load(data))
        except Exception as err:  # the library's own checks, in case ours missed something
            raise ParamsFileError(f"parameter file {path!r} cannot be read by safetensors: "
                                  f"{err}") from None
    # bfloat16 from other tools (e.g. safetensors.torch): widen exactly to float32
    start = 8 + int.from_bytes(data[:8], "little")
    out = {}
    for name, e in entries.items():
        b, s = e["data_offsets"]
        raw = data[start + b:start + s]
        if e["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(_ST_DTYPES[e["dtype"]][0]).newbyteorder("<"))
        out[name] = arr.reshape(e["shape"]).astype(arr.dtype.newbyteorder("="))
    return out


def _json_meta(path: str, meta: Mapping[str, str], key: str, default: Any) -> Any:
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise ParamsFileError(f"parameter file {path!r} has corrupted metadata {key!r}") \
            from None


def _split(path: str, arrays: dict[str, np.ndarray], order: Any
           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    params = {k: v for k, v in arrays.items() if not k.startswith(STATE_PREFIX)}
    state = {k[len(STATE_PREFIX):]: v for k, v in arrays.items() if k.startswith(STATE_PREFIX)}
    if isinstance(order, dict):  # restore the order the caller saved in
        try:
            p_order = list(order.get("params") or [])
            s_order = list(order.get("state") or [])
        except TypeError:
            raise ParamsFileError(f"parameter file {path!r} has corrupted key order "
                                  "metadata") from None
        if set(p_order) == set(params) and set(s_order) == set(state):
            params = {k: params[k] for k in p_order}
            state = {k: state[k] for k in s_order}
    return params, state


def _kind_of(dtype_name: str) -> int:
    return T.as_dtype(dtype_name).kind if dtype_name in T.DTYPES else T.INT


def _into_compiled(path: str, model: Any, params: dict[str, np.ndarray],
                   state: dict[str, np.ndarray], dtypes: dict[str, str], allow_cast: bool
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    key_problems: list[str] = []
    shape_problems: list[str] = []
    type_problems: list[str] = []
    backend = model.backend
    groups = [("parameter", "", params, model._params)]
    if state:
        groups.append(("state", STATE_PREFIX, state, model._state_specs))
    for what, prefix, got, specs in groups:
        missing = [k for k in specs if k not in got]
        unknown = [k for k in got if k not in specs]
        if missing:
            key_problems.append(f"{what} keys missing from the file: {missing}")
        if unknown:
            key_problems.append(f"{what} keys in the file the model does not have: {unknown}")
        for key, spec in specs.items():
            if key not in got:
                continue
            arr = got[key]
            if tuple(arr.shape) != tuple(spec.shape):
                shape_problems.append(f"{what} {key!r} has shape {list(arr.shape)} in the file, "
                                      f"the model expects {list(spec.shape)}")
            dt = dtypes[prefix + key]
            kind = _kind_of(dt)
            if not kind & spec.kinds:
                type_problems.append(f"{what} {key!r} is {dt} in the file, the model expects "
                                     f"{T.kind_names(spec.kinds)}")
            elif kind == T.FLOAT and dt != backend.dtype.name and not allow_cast:
                type_problems.append(f"{what} {key!r} is {dt} in the file, the model is "
                                     f"compiled for {backend.dtype.name}")
    if key_problems or shape_problems or type_problems:
        lines = "\n  ".join(key_problems + shape_problems + type_problems)
        msg = f"parameter file {path!r} does not fit the compiled model:\n  {lines}"
        if type_problems and not key_problems and not shape_problems:
            if any("compiled for" in p for p in type_problems):
                msg += "\n(pass allow_cast=True to convert the precision)"
            raise TypeMismatchError(msg)
        if shape_problems and not key_problems:
            raise ShapeMismatchError(msg)
        raise InputError(msg)
    out_params = {k: _to_backend(backend, params[k], dtypes[k])
                  for k in model._params}
    out_state = {k: _to_backend(backend, state[k], dtypes[STATE_PREFIX + k])
                 for k in model._state_specs} if state else {}
    return out_params, out_state


def _convert(path: str, backend: Any, arrays: dict[str, np.ndarray], prefix: str,
             dtypes: dict[str, str], allow_cast: bool) -> dict[str, Any]:
    bad = [f"{prefix}{k} ({dtypes[prefix + k]})" for k in arrays
           if _kind_of(dtypes[prefix + k]) == T.FLOAT and dtypes[prefix + k] != backend.dtype.name]
    if bad and not allow_cast:
        raise TypeMismatchError(
            f"parameter file {path!r} holds {', '.join(bad)}, but the backend's float dtype is "
            f"{backend.dtype.name}; pass allow_cast=True to convert")
    return {k: _to_backend(backend, v, dtypes[prefix + k]) for k, v in arrays.items()}


def _to_backend(backend: Any, arr: np.ndarray, dtype_name: str) -> Any:
    if _kind_of(dtype_name) == T.FLOAT:
        return backend.array(arr, dtype=backend.dtype)
    if arr.dtype.name not in T.DTYPES:
        raise TypeMismatchError(f"an entry of dtype {arr.dtype.name} cannot become a "
                                f"{backend.name} array; Mithril supports {sorted(T.DTYPES)}")
    return backend.array(arr, dtype=T.as_dtype(arr.dtype.name))


def _safetensors_numpy() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError as err:
        raise missing_package("parameter files", "safetensors", "io") from err
    return st
