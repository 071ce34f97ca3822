"""Training checkpoints: ``fit(..., checkpoint=path, checkpoint_every=N)`` and ``fit(..., resume=path)``.

A checkpoint holds everything the next epoch depends on: the parameters, the optimizer's state
(its slots, step count and lr), the random generators' states (row order, dropout masks), the
History so far, the early-stopping best, and a ReduceLROnPlateau's state. Resuming from it
gives the same parameters, bit for bit, as a run that was never interrupted. The file (.npz,
a JSON header beside the arrays) is written to a temporary file and renamed into place, so a
run killed while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .model_file import write_npz_atomically
from .standardize import Standardizer

FORMAT = "backprop-checkpoint"
VERSION = 1


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
    write_npz_atomically(path, arrays, prefix=".backprop-ckpt-")


def load(path):
    """The checkpoint at ``path`` as (header dict, arrays dict); a clear error if it is not one."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a backprop checkpoint ({exc})") from None
    try:
        header = json.loads(str(arrays.pop("header")))
    except (KeyError, ValueError):
        raise ValueError(f"{path} is not a backprop checkpoint (no header)") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a backprop checkpoint (format {header.get('format')!r})")
    return header, arrays


def restore(path, net, trainer, order_rng, history, schedule=None):
    """Puts a checkpoint's state into the model, trainer, generator and History; returns
    (the next epoch to run, the early-stopping best as fit keeps it)."""
    header, arrays = load(path)
    if header["layers"] != net.layers:
        raise ValueError(f"the checkpoint {path} is for layers {header['layers']}, the model "
                         f"has {net.layers}")
    if header["optimizer"] != type(trainer.optimizer).__name__:
        raise ValueError(f"the checkpoint {path} was written with optimizer "
                         f"{header['optimizer']}, this fit uses {type(trainer.optimizer).__name__}")
    L = net.n_layers
    net.set_params([arrays[f"W{l}"] for l in range(L)], [arrays[f"b{l}"] for l in range(L)])
    if "standardizer_mean" in arrays:
        net.standardizer = Standardizer.from_arrays(arrays["standardizer_mean"],
                                                    arrays["standardizer_scale"])
    for i, slots in enumerate(trainer.state.slots):
        for name, value in slots.items():
            value[...] = net.backend.asarray(arrays[f"slot{i}_{name}"], value.dtype)
    trainer.state.step = header["step"]
    trainer.optimizer.lr = header["lr"]
    order_rng.bit_generator.state = header["order_rng"]
    trainer.rng.bit_generator.state = header["dropout_rng"]
    history.loss[:] = header["history"]["loss"]
    history.val_loss[:] = header["history"]["val_loss"]
    history.lr[:] = header["history"]["lr"]
    if schedule is not None and "schedule" in header and hasattr(schedule, "observe"):
        state = header["schedule"]
        schedule.lr, schedule.best, schedule.bad_epochs = (state["lr"], state["best"],
                                                           state["bad_epochs"])
    best = None
    if header["best"] is not None:
        params = None
        if header["best"]["params"]:
            params = ([arrays[f"best_W{l}"] for l in range(L)],
                      [arrays[f"best_b{l}"] for l in range(L)])
        best = (header["best"]["val_loss"], header["best"]["epoch"], params)
    return header["epoch"] + 1, best
