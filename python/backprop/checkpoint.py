"""Training checkpoints: ``fit(..., checkpoint=path, checkpoint_every=N)`` and ``fit(..., resume=path)``.

A checkpoint holds everything the next epoch depends on: the parameters, the optimizer's state
(its slots, step count and lr), the random generators' states (row order, dropout masks), the
History so far, the early-stopping best, and a ReduceLROnPlateau's state. Resuming from it
gives the same parameters, bit for bit, as a run that was never interrupted. The file (.npz,
a JSON header beside the arrays) is written to a temporary file and renamed into place, so a
run killed while writing leaves the previous checkpoint intact (and the next write removes the
temporary file it left: ``backprop.model_file.write_npz_atomically``).

``fit`` checks the ``checkpoint`` path before training (``check_target``: a file can be created
in its folder) and reads a ``resume`` checkpoint whole before the model changes (``read``): the
file as a model file is checked (``backprop.model_file``: members' shapes and dtypes from their
.npy headers before their data, the total size against the file), then the header's keys and
types, the layers and optimizer against this fit's, every array's shape against the model's
and the optimizer's slots, the values (finite, within the model's dtype), the generators' states
and the History. Only then does ``Resume.apply`` change the model, the optimizer's state, the
generators and the History, with nothing left that can fail. A damaged or foreign file is a
ValueError naming it and what is wrong (FileNotFoundError when there is none).
"""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np

from . import _checks, model_file
from .model_file import write_npz_atomically
from .standardize import Standardizer

FORMAT = "backprop-checkpoint"
VERSION = 1
# the largest JSON header (the History grows by about 240 bytes an epoch) a checkpoint may hold
MAX_HEADER_BYTES = 2**30
_KEYS = ("epoch", "layers", "dtype", "step", "lr", "optimizer", "order_rng", "dropout_rng",
         "history", "best")
_OPTIONAL = ("standardizer_mean", "standardizer_scale")  # both or neither
_MEMBER = re.compile(r"(best_)?[Wb]\d+|slot\d+_\w+|standardizer_(mean|scale)")


def save(path, net, trainer, order_rng, epoch, history, best=None, schedule=None):
    """Writes the state after ``epoch`` (0-based, finished) to ``path`` atomically."""
    header = {"format": FORMAT, "version": VERSION, "epoch": int(epoch),
              "layers": net.layers, "dtype": net.dtype.name,
              "step": int(trainer.state.step), "lr": float(trainer.optimizer.lr),
              "optimizer": type(trainer.optimizer).__name__,
              "order_rng": order_rng.bit_generator.state,
              "dropout_rng": trainer.rng.bit_generator.state,
              "history": {"loss": history.loss, "val_loss": history.val_loss, "lr": history.lr},
              "best": None if best is None or best[1] is None else
              {"val_loss": best[0], "epoch": best[1], "params": best[2] is not None}}
    if schedule is not None and hasattr(schedule, "observe"):
        header["schedule"] = {"lr": schedule.lr, "best": schedule.best,
                              "bad_epochs": schedule.bad_epochs}
    arrays = {"header": np.array(json.dumps(header))}
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"W{l}"], arrays[f"b{l}"] = W, b
    for i, slots in enumerate(trainer.state.slots):
        for name, value in slots.items():
            arrays[f"slot{i}_{name}"] = np.array(net.backend.to_numpy(value))
    if best is not None and best[2] is not None:
        for l, (W, b) in enumerate(zip(*best[2])):
            arrays[f"best_W{l}"], arrays[f"best_b{l}"] = W, b
    if net.standardizer is not None:
        arrays["standardizer_mean"] = net.standardizer.mean
        arrays["standardizer_scale"] = net.standardizer.scale
    write_npz_atomically(path, arrays)


def check_target(path):
    """Checks, before training, that a checkpoint can be written at ``path``: not a folder, in
    a folder that exists and where a file can be created. Raises an OSError naming ``path``."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        model_file.check_writable(path)
    except OSError as exc:
        where = (f"its folder {folder} does not exist" if isinstance(exc, FileNotFoundError)
                 else f"{exc.strerror or exc} (in {folder})")
        raise OSError(exc.errno, f"cannot write the checkpoint {os.fspath(path)}: {where}; "
                                 "checked before training") from None


def damaged(path, why):
    """The error for a checkpoint whose contents are wrong (``why`` says what)."""
    return ValueError(f"{path} is a damaged backprop checkpoint ({why})")


def _read(path, expected=None):
    """(header, arrays) of the checkpoint at ``path``, checked as a file: a readable .npz whose
    header is a checkpoint's of this version, whose members are numeric arrays of consistent
    sizes (read from their .npy headers before their data) and declare at most what the file
    can hold (``model_file.check_total``). ``expected(header)`` (checks the header and) gives
    {member name: shape}: exactly those members are read (the standardizer's optional), else
    every member a checkpoint may have."""
    path = os.fspath(path)
    try:
        opened = model_file.open_npz(path, "backprop checkpoint",
                                     "the .npz that fit(checkpoint=...) writes",
                                     lambda why: damaged(path, why))
        with opened as (zf, members, size):
            return _read_members(path, zf, members, size, expected)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None


def _read_members(path, zf, members, size, expected):
    if "header.npy" not in members:
        raise ValueError(f"{path} is not a backprop checkpoint (no header)")
    info = members["header.npy"]
    why = model_file.check_member(info, size)
    if why is not None:
        raise damaged(path, why)
    header = model_file.read_json(zf, info, MAX_HEADER_BYTES)
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a backprop checkpoint (unreadable header)")
    if header.get("format") == model_file.FILE_FORMAT:
        raise ValueError(f"{path} is a model file (MLP.save), not a checkpoint: load it with "
                         "MLP.load, or resume from a file that fit(checkpoint=...) wrote")
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a backprop checkpoint (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{path} was written by another version of backprop (checkpoint "
                         f"version {header.get('version')!r}; this version reads {VERSION})")
    shapes = None if expected is None else expected(header)
    names = [name[:-4] for name in members if name != "header.npy"]
    for name in names:
        if not (name in shapes if shapes is not None else _MEMBER.fullmatch(name)):
            raise damaged(path, f"unexpected member {name + '.npy'!r}")
    for name in shapes or ():
        if name not in names and name not in _OPTIONAL:
            raise damaged(path, f"missing {name!r}")
    for name in names:
        found = model_file.npy_shape(zf, members[name + ".npy"], name, size)
        if isinstance(found, str):
            raise damaged(path, found)
        if shapes is not None and found != shapes[name]:
            raise damaged(path, f"{name} has shape {found}; this fit's model and optimizer "
                                f"need {shapes[name]}")
    why = model_file.check_total([members[name] for name in members], size)
    if why is not None:
        raise damaged(path, why)
    return header, {name: model_file.read_array(zf, members[name + ".npy"]) for name in names}


def load(path):
    """The checkpoint at ``path`` as (header dict, arrays dict), checked as a file (``_read``),
    not against a model; a clear error if it is not one."""
    return _read(path)


def _integer(value, name, path, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise damaged(path, f"header: {name} must be an integer >= {minimum}; got {value!r}")
    return value


def _number(value, name, path, finite=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            finite and not math.isfinite(value)):
        raise damaged(path, f"header: {name} must be a {'finite ' if finite else ''}number; "
                            f"got {value!r}")
    return float(value)


def _numbers(value, name, path, lengths):
    if not isinstance(value, list) or len(value) not in lengths:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise damaged(path, f"header: {name} must be a list of "
                            f"{' or '.join(map(str, sorted(lengths)))} numbers; got {got}")
    for i, x in enumerate(value):
        _number(x, f"{name}[{i}]", path, finite=False)
    return [float(x) for x in value]


def _rng_state(state, bit_generator, name, path):
    """``state`` (JSON) as a state of ``bit_generator``'s type, checked on a fresh one."""
    probe = type(bit_generator)()
    try:
        probe.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise damaged(path, f"header: {name} is not a {type(bit_generator).__name__} state "
                            f"({exc!r})") from None
    return probe.state


def _check_header(path, header, net, trainer, schedule):
    """The header's values checked against this fit; returns {member name: shape}."""
    for key in _KEYS:
        if key not in header:
            raise damaged(path, f"missing {key!r} in the header")
    if header["layers"] != net.layers:
        raise ValueError(f"the checkpoint {path} is for layers {header['layers']}, the model "
                         f"has {net.layers}")
    if header["optimizer"] != type(trainer.optimizer).__name__:
        raise ValueError(f"the checkpoint {path} was written with optimizer "
                         f"{header['optimizer']!r}, this fit uses "
                         f"{type(trainer.optimizer).__name__}")
    epoch = _integer(header["epoch"], "epoch", path)
    _integer(header["step"], "step", path)
    if _number(header["lr"], "lr", path) < 0:
        raise damaged(path, f"header: lr must be >= 0; got {header['lr']!r}")
    history = header["history"]
    if not isinstance(history, dict) or not {"loss", "val_loss", "lr"} <= set(history):
        raise damaged(path, "header: history must hold loss, val_loss and lr")
    for key, lengths in (("loss", {epoch + 1}), ("lr", {epoch + 1}), ("val_loss", {0, epoch + 1})):
        _numbers(history[key], f"history.{key}", path, lengths)
    best = header["best"]
    if best is not None:
        if not isinstance(best, dict) or not {"val_loss", "epoch", "params"} <= set(best):
            raise damaged(path, "header: best must be null or hold val_loss, epoch and params")
        _number(best["val_loss"], "best.val_loss", path, finite=False)
        if _integer(best["epoch"], "best.epoch", path) > epoch:
            raise damaged(path, f"header: best.epoch {best['epoch']} is after the epoch {epoch}")
        if not isinstance(best["params"], bool):
            raise damaged(path, f"header: best.params must be true or false; got "
                                f"{best['params']!r}")
    if schedule is not None and hasattr(schedule, "observe") and "schedule" in header:
        state = header["schedule"]
        if not isinstance(state, dict) or not {"lr", "best", "bad_epochs"} <= set(state):
            raise damaged(path, "header: schedule must hold lr, best and bad_epochs")
        _number(state["lr"], "schedule.lr", path)
        _number(state["best"], "schedule.best", path, finite=False)
        _integer(state["bad_epochs"], "schedule.bad_epochs", path)
    L = net.n_layers
    shapes = {}
    prefixes = ("", "best_") if best is not None and best["params"] else ("",)
    for prefix in prefixes:
        for l in range(L):
            shapes[f"{prefix}W{l}"] = (net.layers[l], net.layers[l + 1])
            shapes[f"{prefix}b{l}"] = (net.layers[l + 1],)
    for i, slots in enumerate(trainer.state.slots):
        for name, value in slots.items():
            shapes[f"slot{i}_{name}"] = tuple(int(d) for d in value.shape)
    for name in _OPTIONAL:
        shapes[name] = (net.layers[0],)
    return shapes


class Resume:
    """A checkpoint read and checked against one fit (``read``); ``apply`` puts it in place."""

    def __init__(self, path, header, params, best_params, standardizer, slots, order_state,
                 dropout_state):
        self.path, self.header = path, header
        self.params, self.best_params, self.standardizer = params, best_params, standardizer
        self.slots, self.order_state, self.dropout_state = slots, order_state, dropout_state

    def apply(self, net, trainer, order_rng, history, schedule=None):
        """Puts the state into the model, trainer, generator and History; returns (the next
        epoch to run, the early-stopping best as fit keeps it). Everything was checked by
        ``read``; the generators' states are checked against these generators' types before
        anything changes."""
        path, header = self.path, self.header
        order_state = _rng_state(self.order_state, order_rng.bit_generator, "order_rng", path)
        dropout_state = _rng_state(self.dropout_state, trainer.rng.bit_generator, "dropout_rng",
                                   path)
        if len(self.slots) != len(trainer.state.slots) or any(
                set(saved) != set(slots) for saved, slots in zip(self.slots, trainer.state.slots)):
            raise ValueError(f"the checkpoint {path} was read for another optimizer state")
        net.set_params(*self.params)  # checked by read: it cannot fail
        if self.standardizer is not None:
            net.standardizer = self.standardizer
        for saved, slots in zip(self.slots, trainer.state.slots):
            for name, value in slots.items():
                value[...] = saved[name]
        trainer.state.step = header["step"]
        trainer.optimizer.lr = float(header["lr"])
        order_rng.bit_generator.state = order_state
        trainer.rng.bit_generator.state = dropout_state
        history.loss[:] = [float(x) for x in header["history"]["loss"]]
        history.val_loss[:] = [float(x) for x in header["history"]["val_loss"]]
        history.lr[:] = [float(x) for x in header["history"]["lr"]]
        if schedule is not None and "schedule" in header and hasattr(schedule, "observe"):
            state = header["schedule"]
            schedule.lr, schedule.best, schedule.bad_epochs = (
                float(state["lr"]), float(state["best"]), state["bad_epochs"])
        best = None
        if header["best"] is not None:
            best = (float(header["best"]["val_loss"]), header["best"]["epoch"], self.best_params)
        return header["epoch"] + 1, best


def _checked_params(path, arrays, net, prefix):
    """([W_l], [b_l]) of the checkpoint, each finite and within the model's dtype."""
    L = net.n_layers
    weights = [arrays[f"{prefix}W{l}"] for l in range(L)]
    biases = [arrays[f"{prefix}b{l}"] for l in range(L)]
    for l in range(L):
        for name, x in ((f"{prefix}W{l}", weights[l]), (f"{prefix}b{l}", biases[l])):
            try:
                _checks.check_finite(x, name)
                _checks.check_fits(x, net.dtype, name)
            except ValueError as exc:
                raise damaged(path, str(exc)) from None
    return weights, biases


def read(path, net, trainer, schedule=None, order_rng=None):
    """The checkpoint at ``path`` read whole and checked against this fit (``net``, its
    ``trainer``, the lr ``schedule``, the row-order generator, by default the PCG64 of
    ``np.random.default_rng`` that fit uses) as a ``Resume``; nothing changes here."""
    path = os.fspath(path)
    header, arrays = _read(path, lambda header: _check_header(path, header, net, trainer,
                                                              schedule))
    params = _checked_params(path, arrays, net, "")
    best_params = (_checked_params(path, arrays, net, "best_")
                   if header["best"] is not None and header["best"]["params"] else None)
    standardizer = None
    has_mean, has_scale = "standardizer_mean" in arrays, "standardizer_scale" in arrays
    if has_mean != has_scale:
        raise damaged(path, "standardizer_mean without standardizer_scale" if has_mean else
                            "standardizer_scale without standardizer_mean")
    if has_mean:
        try:  # shapes checked by _read
            standardizer = Standardizer.from_arrays(arrays["standardizer_mean"],
                                                    arrays["standardizer_scale"])
        except (TypeError, ValueError) as exc:
            raise damaged(path, str(exc)) from None
    slots = []
    for i, state in enumerate(trainer.state.slots):
        saved = {}
        for name, value in state.items():
            x = arrays[f"slot{i}_{name}"]
            try:
                _checks.check_finite(x, f"slot{i}_{name}")
                _checks.check_fits(x, value.dtype, f"slot{i}_{name}")
            except ValueError as exc:
                raise damaged(path, str(exc)) from None
            saved[name] = net.backend.asarray(x, value.dtype)
        slots.append(saved)
    order_type = np.random.PCG64() if order_rng is None else order_rng.bit_generator
    order_state = _rng_state(header["order_rng"], order_type, "order_rng", path)
    dropout_state = _rng_state(header["dropout_rng"], trainer.rng.bit_generator, "dropout_rng",
                               path)
    return Resume(path, header, params, best_params, standardizer, slots, order_state,
                  dropout_state)


def restore(path, net, trainer, order_rng, history, schedule=None):
    """Puts a checkpoint's state into the model, trainer, generator and History, after reading
    and checking all of it (``read``); returns (the next epoch to run, the early-stopping best
    as fit keeps it)."""
    resume = read(path, net, trainer, schedule, order_rng)
    return resume.apply(net, trainer, order_rng, history, schedule)
