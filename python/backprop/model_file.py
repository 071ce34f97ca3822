"""The model file: the .npz that ``MLP.save`` writes and ``MLP.load`` reads.

    header.npy                            a JSON object: format, version, the MLP's config
                                          (layers, activation, output_activation, init, dtype,
                                          seed) and optionally metadata (a JSON object)
    W0.npy .. W{L-1}.npy, b0.npy ..       the parameters: W_l is p_l x p_{l+1}, b_l is p_{l+1}
    standardizer_mean.npy, _scale.npy     optional, both or neither, of shape (p_0,)

``read`` checks a file before anything is allocated: the header's layers against the shapes the
members declare (read from their .npy headers, not their data), each array against
``MAX_ARRAY_ELEMENTS``; only the members a model file has are read, and any other member is
rejected unread. Every failure is a ValueError naming the file (FileNotFoundError as is). This
module knows the file, not the model: ``backprop.model`` builds the MLP from what ``read`` returns.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
import zlib

import numpy as np

from . import _checks

FILE_FORMAT = "backprop.MLP"
FILE_VERSION = 1
# the largest array ``read`` accepts (entries): 32-bit indexing in the native kernels
MAX_ARRAY_ELEMENTS = 2**31 - 1
_HEADER_MAX_BYTES = 1 << 20
_CONFIG_KEYS = ("layers", "activation", "output_activation", "init", "dtype", "seed")


def write_npz_atomically(path, arrays, prefix=".backprop-"):
    """Writes ``arrays`` to ``path`` (.npz) atomically: a temporary file in the same folder,
    flushed to disk, then renamed into place; a failure leaves no partial file behind."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def damaged(path, why):
    """The error for a model file whose contents are wrong (``why`` says what)."""
    return ValueError(f"{path} is a damaged backprop model file ({why})")


def write(path, config, weights, biases, standardizer=None, metadata=None):
    """Writes a model file atomically: ``config`` (the MLP's ``config()``), the parameters,
    ``standardizer`` as (mean, scale) or None, and ``metadata`` (a JSON-able dict) if any."""
    header = {"format": FILE_FORMAT, "version": FILE_VERSION, **config}
    if metadata:  # a JSON-able dict (e.g. the CLI's column names)
        header["metadata"] = metadata
    arrays = {"header": np.array(json.dumps(header))}
    for l, (W, b) in enumerate(zip(weights, biases)):
        arrays[f"W{l}"], arrays[f"b{l}"] = W, b
    if standardizer is not None:
        arrays["standardizer_mean"], arrays["standardizer_scale"] = standardizer
    write_npz_atomically(path, arrays)


def read(path):
    """(header, weights, biases, standardizer, metadata) of the model file at ``path``, checked.

    ``header`` is the file's JSON header with its layers checked (a list of ints); ``weights``
    and ``biases`` the arrays as stored; ``standardizer`` (mean, scale) or None; ``metadata``
    the header's metadata (a dict) or None.
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"{path} is not a backprop model file (not a readable .npz: {exc})") from None
    with f:
        if f.read(6) == b"\x93NUMPY":
            raise ValueError(f"{path} is a .npy file (one array), not a backprop model file "
                             "(the .npz that MLP.save writes)")
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path} is not a backprop model file (not a readable .npz: {exc})") from None
        with zf:
            try:
                return _read_members(path, zf)
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                raise damaged(path, exc) from None


def _read_members(path, zf):
    members = {}
    for info in zf.infolist():
        members.setdefault(info.filename, info)
    if "header.npy" not in members:
        raise ValueError(f"{path} is not a backprop model file (no header)")
    header = _read_header(path, zf, members["header.npy"])
    for key in _CONFIG_KEYS:
        if key not in header:
            raise damaged(path, f"missing {key!r} in the header")
    try:
        layers = _checks.check_layers(header.get("layers"))
    except (TypeError, ValueError) as exc:
        raise damaged(path, f"header: {exc}") from None
    L = len(layers) - 1
    expected = {f"W{l}": (layers[l], layers[l + 1]) for l in range(L)}
    expected.update({f"b{l}": (layers[l + 1],) for l in range(L)})
    for name, shape in expected.items():
        if math.prod(shape) > MAX_ARRAY_ELEMENTS:
            raise damaged(path, f"the header declares layers {layers}: {name} would have shape "
                                f"{shape}, more than {MAX_ARRAY_ELEMENTS} entries")
    has_mean = "standardizer_mean.npy" in members
    has_scale = "standardizer_scale.npy" in members
    if has_mean != has_scale:
        raise damaged(path, "standardizer_mean without standardizer_scale" if has_mean else
                            "standardizer_scale without standardizer_mean")
    if has_mean:
        expected["standardizer_mean"] = expected["standardizer_scale"] = (layers[0],)
    for name in members:
        if name == "header.npy" or (name.endswith(".npy") and name[:-4] in expected):
            continue
        raise damaged(path, f"unexpected member {name!r}; a model file of {L} layers holds "
                            f"header, W0..W{L - 1}, b0..b{L - 1} and optionally "
                            "standardizer_mean and standardizer_scale")
    for name, shape in expected.items():
        if name + ".npy" not in members:
            raise damaged(path, f"missing {name!r}")
        found = _npy_shape(zf, members[name + ".npy"], name)
        if isinstance(found, str):
            raise damaged(path, found)
        if found != shape:
            raise damaged(path, f"{name} has shape {found} in the file, but the header's layers "
                                f"{layers} need {shape}")
    metadata = header.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise damaged(path, "header: metadata must be a JSON object")

    def array(name):
        with zf.open(members[name + ".npy"]) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    weights = [array(f"W{l}") for l in range(L)]
    biases = [array(f"b{l}") for l in range(L)]
    standardizer = ((array("standardizer_mean"), array("standardizer_scale")) if has_mean
                    else None)
    return dict(header, layers=layers), weights, biases, standardizer, metadata


def _npy_header(zf, info):
    """(shape, dtype, data offset) from a .npy member's header, without reading its data."""
    with zf.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dt = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dt = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return tuple(int(d) for d in shape), dt, member.tell()


def _npy_shape(zf, info, name):
    """The shape a numeric .npy member declares, read from its header (not its data); a string
    saying what is wrong when the header is unreadable, the dtype is not numeric, or the
    member's size does not match the header."""
    try:
        shape, dt, offset = _npy_header(zf, info)
    except ValueError as exc:
        return f"{name}: unreadable .npy header ({exc})"
    if dt.hasobject or dt.kind not in "fiu":
        return f"{name} has dtype {dt}; a model file holds real numbers"
    if math.prod(shape) * dt.itemsize + offset != info.file_size:
        return (f"{name}: its .npy header declares {shape} of {dt} but the member holds "
                f"{info.file_size - offset} bytes of data")
    return shape


def _read_header(path, zf, info):
    """The JSON header of a model file as a dict, after its format and version are checked."""
    unreadable = ValueError(f"{path} is not a backprop model file (unreadable header)")
    if info.file_size > _HEADER_MAX_BYTES:
        raise unreadable
    try:
        shape, dt, _ = _npy_header(zf, info)
    except ValueError:
        raise unreadable from None
    if shape != () or dt.kind != "U":
        raise unreadable
    try:
        with zf.open(info) as member:
            text = str(np.lib.format.read_array(member, allow_pickle=False))
        header = json.loads(text)
    except (ValueError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a backprop model file (unreadable header)") from None
    if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a backprop model file (format "
                         f"{header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("version") != FILE_VERSION:
        raise ValueError(f"{path} was written by another version of backprop (file version "
                         f"{header.get('version')!r}; this version reads {FILE_VERSION})")
    return header
