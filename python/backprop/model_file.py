"""The model file: the .npz that ``MLP.save`` writes and ``MLP.load`` reads.

    header.npy                            a JSON object: format, version, the MLP's config
                                          (layers, activation, output_activation, init, dtype,
                                          seed) and optionally metadata (a JSON object)
    W0.npy .. W{L-1}.npy, b0.npy ..       the parameters: W_l is p_l x p_{l+1}, b_l is p_{l+1}
    standardizer_mean.npy, _scale.npy     optional, both or neither, of shape (p_0,)

``read`` checks a file before anything is allocated: the header's layers against the shapes the
members declare (read from their .npy headers, not their data), each array against
``MAX_ARRAY_ELEMENTS``, and the bytes all members declare together (uncompressed) against
``MAX_MODEL_BYTES`` and against the file (``check_total``: a deflated member of zeros declares
about 1000 times its size); only the members a model file has are read, and any other member is
rejected unread. Every failure is a ValueError naming the file (FileNotFoundError as is). This
module knows the file, not the model: ``backprop.model`` builds the MLP from what ``read`` returns.
Checkpoints (``backprop.checkpoint``) are read with the same checks (``open_npz``,
``check_member``, ``check_total``) and written by the same writer.

Writing (``write_npz_atomically``) goes to a temporary file beside the target, named after it
(``.<target name>.<16 hex digits>.backprop-tmp``), flushed to disk and renamed into place: a
failure, or a kill, never leaves a partial target. The file gets the permissions of an ordinary
new file (0666 less the umask). A write killed before its rename (``kill -9``) leaves its
temporary file; the next write to the same target removes such files of that target only,
and only those that are stale: unchanged for ``STALE_TEMP_SECONDS`` and not locked (every
writer holds an exclusive ``flock`` on its temporary file until it is renamed; where ``flock``
is not available, the age alone decides).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import stat
import time
import zipfile
import zlib

import numpy as np

from . import _checks

try:  # POSIX: a writer locks its temporary file, so a live write's file is never taken as stale
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

FILE_FORMAT = "backprop.MLP"
FILE_VERSION = 1
# the largest array ``read`` accepts (entries): 32-bit indexing in the native kernels
MAX_ARRAY_ELEMENTS = 2**31 - 1
# the most bytes a model file's arrays may declare together, uncompressed (2 GiB: 536 million
# float32 parameters); set backprop.model_file.MAX_MODEL_BYTES higher to load a larger model
MAX_MODEL_BYTES = 2**31
# beyond EXPANSION_FREE_BYTES, the members of a file may declare at most MAX_EXPANSION times the
# file's size (parameters compress little: random floats by about 1.1 times; a deflated member
# of zeros declares about 1000 times its size)
MAX_EXPANSION = 32
EXPANSION_FREE_BYTES = 16 * 2**20
# a temporary file of a write to the same target, unchanged this long and not locked, is stale
STALE_TEMP_SECONDS = 60.0
_HEADER_MAX_BYTES = 1 << 20
_CONFIG_KEYS = ("layers", "activation", "output_activation", "init", "dtype", "seed")
_TEMP_SUFFIX = ".backprop-tmp"
_DEFLATE_MAX_RATIO = 1032  # deflate's largest expansion (258 bytes from 2 bits)


# ---- writing ----------------------------------------------------------------------------------

def _temp_tag(name):
    """The part of a temporary file's name that names its target: the target's name, or for a
    long one its first 40 characters and a hash of the whole (a file name has 255 bytes)."""
    if len(name.encode("utf-8", "surrogateescape")) <= 120:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{name[:40]}~{digest}"


def _temp_names(path):
    """(the folder, the name prefix, a pattern matching exactly the temporary files of writes to
    ``path``): ``.<tag>.<16 hex digits>.backprop-tmp``. The hex digits hold no dot and the
    suffix ends the name, so no other target's temporary files match."""
    path = os.path.abspath(os.fsdecode(os.fspath(path)))
    folder, name = os.path.split(path)
    prefix = f".{_temp_tag(name)}."
    return folder, prefix, re.compile(re.escape(prefix) + "[0-9a-f]{16}" + re.escape(_TEMP_SUFFIX))


def _create_temp(path):
    """(fd, name) of a new temporary file for a write to ``path``, in its folder: created
    exclusively (O_EXCL), with mode 0666 less the umask, and locked (flock) while it lives."""
    folder, prefix, _ = _temp_names(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(
        os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}{_TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask, as for any new file
        except FileExistsError:
            continue
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # no flock on this file system: the age alone protects it
                pass
        return fd, tmp
    raise FileExistsError(errno.EEXIST, f"no free temporary file name in {folder}", path)


def remove_stale_temps(path, now=None):
    """Removes the temporary files that writes to ``path`` killed before their rename left
    behind, and returns their names: files in the target's folder whose names match this
    target's pattern (``_temp_names``), regular files, unchanged for ``STALE_TEMP_SECONDS``
    and not locked by a live writer. Anything that cannot be checked is left alone."""
    folder, _, pattern = _temp_names(path)
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_TEMP_SECONDS:
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a live writer holds it
                    continue
                except OSError:  # no flock here: the age alone decides
                    pass
            if os.path.samestat(os.fstat(fd), st):  # still the file that was checked
                os.unlink(entry.path)
                removed.append(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def check_writable(path):
    """Raises the OSError a write to ``path`` would meet, before anything is written: ``path``
    is a folder, its folder is missing or not a folder, or no file can be created there (a
    temporary file is created and removed to find out)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "Is a folder", path)
    fd, tmp = _create_temp(path)
    os.close(fd)
    os.unlink(tmp)


def write_npz_atomically(path, arrays):
    """Writes ``arrays`` to ``path`` (.npz) atomically: a temporary file in the same folder,
    flushed to disk, then renamed into place; a failure leaves no partial file behind. The
    file's mode is that of an ordinary new file (0666 less the umask). Stale temporary files of
    earlier writes to ``path`` that were killed are removed first (``remove_stale_temps``)."""
    path = os.fspath(path)
    remove_stale_temps(path)
    fd, tmp = _create_temp(path)
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


# ---- reading ----------------------------------------------------------------------------------

@contextlib.contextmanager
def open_npz(path, kind, about, damaged):
    """The .npz at ``path`` opened for checked reading: yields (ZipFile, {name: ZipInfo}, the
    file's size in bytes). ``kind`` names what the file should be ("backprop model file"),
    ``about`` adds what writes one; ``damaged(why)`` is the error for a file of that kind whose
    contents are wrong. A file that is no .npz is a ValueError naming it (FileNotFoundError as
    is); a zip error, a truncated member or bad data while the body reads is ``damaged``."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"{path} is not a {kind} (not a readable .npz: {exc})") from None
    with f:
        if f.read(6) == b"\x93NUMPY":
            raise ValueError(f"{path} is a .npy file (one array), not a {kind} ({about})")
        size = os.fstat(f.fileno()).st_size
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path} is not a {kind} (not a readable .npz: {exc})") from None
        with zf:
            members = {}
            for info in zf.infolist():
                members.setdefault(info.filename, info)
            try:
                yield zf, members, size
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error,
                    NotImplementedError) as exc:
                raise damaged(exc) from None


def check_member(info, file_size):
    """What is wrong with a zip member's record (a string), or None: encrypted, compressed by
    other than deflate, or declaring more bytes than its compressed data can hold."""
    if info.flag_bits & 0x1:
        return f"{info.filename} is encrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return (f"{info.filename} is compressed by method {info.compress_type}; an .npz member "
                "is stored or deflated")
    if info.header_offset + info.compress_size > file_size:
        return (f"{info.filename} claims {info.compress_size} bytes at offset "
                f"{info.header_offset}, past the end of the file ({file_size} bytes)")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        return (f"{info.filename} is stored uncompressed but declares {info.file_size} bytes "
                f"and holds {info.compress_size}")
    if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024:
        return (f"{info.filename} declares {info.file_size} bytes from {info.compress_size} "
                "compressed bytes, more than deflate can produce")
    return None


def check_total(infos, file_size, limit=None):
    """What is wrong with the sizes of the members to be read (a string), or None: together
    they declare more than ``limit`` bytes (uncompressed), or more than ``MAX_EXPANSION`` times
    the file's size once beyond ``EXPANSION_FREE_BYTES``, or their data overlap."""
    declared = sum(info.file_size for info in infos)
    if sum(info.compress_size for info in infos) > file_size:
        return "its members overlap (their compressed sizes add up to more than the file)"
    if limit is not None and declared > limit:
        return (f"its arrays declare {declared} bytes together, more than the limit of {limit} "
                "(backprop.model_file.MAX_MODEL_BYTES)")
    if declared > max(EXPANSION_FREE_BYTES, MAX_EXPANSION * file_size):
        return (f"its members declare {declared} bytes uncompressed from a file of {file_size} "
                f"bytes; beyond {EXPANSION_FREE_BYTES} bytes at most {MAX_EXPANSION} times the "
                "file's size is accepted (backprop.model_file.MAX_EXPANSION)")
    return None


def read_array(zf, info):
    """The array of a .npy member (checked first: ``npy_shape``), without pickles."""
    with zf.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def read_json(zf, info, max_bytes):
    """The JSON object of a .npy member holding one string (a header), or None when the member
    is larger than ``max_bytes``, no 0-d string array, or not JSON."""
    if info.file_size > max_bytes:
        return None
    try:
        shape, dt, _ = _npy_header(zf, info)
    except ValueError:
        return None
    if shape != () or dt.kind != "U":
        return None
    try:
        return json.loads(str(read_array(zf, info)))
    except (ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
        return None


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
    with open_npz(path, "backprop model file", "the .npz that MLP.save writes",
                  lambda why: damaged(path, why)) as (zf, members, size):
        return _read_members(path, zf, members, size)


def _read_members(path, zf, members, size):
    if "header.npy" not in members:
        raise ValueError(f"{path} is not a backprop model file (no header)")
    header = _read_header(path, zf, members["header.npy"], size)
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
        found = npy_shape(zf, members[name + ".npy"], name, size)
        if isinstance(found, str):
            raise damaged(path, found)
        if found != shape:
            raise damaged(path, f"{name} has shape {found} in the file, but the header's layers "
                                f"{layers} need {shape}")
    why = check_total([members[name + ".npy"] for name in ("header", *expected)], size,
                      MAX_MODEL_BYTES)
    if why is not None:
        raise damaged(path, why)
    metadata = header.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise damaged(path, "header: metadata must be a JSON object")

    def array(name):
        return read_array(zf, members[name + ".npy"])
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


def npy_shape(zf, info, name, file_size):
    """The shape a numeric .npy member declares, read from its header (not its data); a string
    saying what is wrong when the member's zip record is inconsistent (``check_member``), the
    header is unreadable, the dtype is not numeric, or the member's size does not match the
    header."""
    why = check_member(info, file_size)
    if why is not None:
        return why
    try:
        shape, dt, offset = _npy_header(zf, info)
    except ValueError as exc:
        return f"{name}: unreadable .npy header ({exc})"
    if dt.hasobject or dt.kind not in "fiu":
        return f"{name} has dtype {dt}; the file holds real numbers only"
    if math.prod(shape) * dt.itemsize + offset != info.file_size:
        return (f"{name}: its .npy header declares {shape} of {dt} but the member holds "
                f"{info.file_size - offset} bytes of data")
    return shape


def _read_header(path, zf, info, size):
    """The JSON header of a model file as a dict, after its format and version are checked."""
    why = check_member(info, size)
    if why is not None:
        raise damaged(path, why)
    header = read_json(zf, info, _HEADER_MAX_BYTES)
    if header is None:
        raise ValueError(f"{path} is not a backprop model file (unreadable header)")
    if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a backprop model file (format "
                         f"{header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("version") != FILE_VERSION:
        raise ValueError(f"{path} was written by another version of backprop (file version "
                         f"{header.get('version')!r}; this version reads {FILE_VERSION})")
    return header
