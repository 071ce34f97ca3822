"""``backprop train`` and ``backprop predict``: fit a network to a CSV file, predict from one.

    backprop train data.csv --target y --layers 64,64 --epochs 200 --out model.npz
    backprop predict model.npz data.csv [--proba] > predictions.csv

The CSV has a header row. Feature columns (every column that is not a target, or those named by
--features) hold plain decimal numbers (ASCII digits, an optional sign, point and exponent: no
``1_000``, no NaN or Inf) within the model's dtype (float32); any other cell is an error naming
its line and column, as no row is dropped. The target: a column of numbers is regressed (--loss
mse or sse); a column of text makes a classifier whose classes are its distinct values; a column
of both is an error. --loss cross_entropy classifies one column: text labels, or integers (the
classes are then the integer values, sorted as numbers); other numbers are refused. The file is
read in blocks of rows with the standard library's csv module into float64 arrays, so memory
grows with the numbers, not with the text.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys

import numpy as np

from . import demo
from .backends import ACTIVATIONS
from .cli_common import UsageError, check_writable, pick_backend
from .csv_table import DTYPE, INTEGER, CsvTable, is_number, read_training_data
from .model import MLP
from .standardize import Standardizer
from .step import NonFiniteLossError

LOSSES = ("mse", "sse", "cross_entropy")
MAX_PARAMETERS = 2**28  # weights and biases of one model: 1 GiB in float32, 4 GiB with Adam's state

def option_integer(option, text, minimum):
    """``text`` of an integer option as an int >= ``minimum`` (ASCII digits only)."""
    if text is None or not INTEGER.fullmatch(text) or int(text) < minimum:
        raise UsageError(f"{option} must be an integer >= {minimum}; got {text!r}")
    return int(text)


def option_number(option, text):
    """``text`` of a number option as a finite float (a plain decimal)."""
    if text is None or not is_number(text):
        raise UsageError(f"{option} must be a number; got {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise UsageError(f"{option} must be a finite number; got {text!r}")
    return value


def _names(text, option):
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise UsageError(f"{option} must be comma-separated column names; got {text!r}")
    if len(set(names)) != len(names):
        raise UsageError(f"{option} names a column twice: {text!r}")
    return names


def _layers(text):
    widths = [w.strip() for w in text.split(",")]
    if not all(re.fullmatch(r"[0-9]+", w) and int(w) >= 1 for w in widths):
        raise UsageError(f"--layers must be comma-separated positive integers (hidden widths); "
                         f"got {text!r}")
    return [int(w) for w in widths]


def parameter_count(layers):
    return sum((a + 1) * b for a, b in zip(layers, layers[1:]))


def _available_memory():
    """Bytes of memory this process may still use (MemAvailable, within a cgroup's limit), or
    None where the system does not say."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_size(layers, rows, n, classes, backend):
    """Refuses a model of more than MAX_PARAMETERS parameters and, on the host backends, a
    training run whose estimated memory exceeds what is available, before anything is allocated.
    The estimate (float32), measured on the numpy backend with some margin: 40 bytes a parameter
    (weights, gradients, Adam's moments and the temporaries of its update), 24 bytes a unit of
    each layer for each of the ``rows`` rows trained at a time (H, A, G and temporaries), the
    float32 copy of the ``n`` rows of data, and the one-hot targets of a classifier."""
    count = parameter_count(layers)
    if count > MAX_PARAMETERS:
        raise UsageError(f"the network {layers} would have {count:,} parameters; backprop train "
                         f"makes at most {MAX_PARAMETERS:,} (2**28): use smaller --layers")
    if backend == "cuda" or rows is None:
        return
    need = (40 * count + 24 * rows * sum(layers[1:]) + 4 * n * (layers[0] + layers[-1])
            + 12 * n * classes)
    available = _available_memory()
    if available is not None and need > available:
        raise UsageError(f"training the network {layers} on {rows:,} rows at a time needs about "
                         f"{need / 2**30:.1f} GiB of memory; {max(available, 0) / 2**30:.1f} GiB "
                         "is available (smaller --layers or --batch-size need less)")


def cmd_train(args):
    if args.data is None:  # `train --target y data.csv`: --target took the file name too
        raise UsageError("no data file: --target takes every word up to the next option as a "
                         f"column name (got {', '.join(map(repr, args.target))}); give the data "
                         "file first: backprop train DATA.csv --target COL ...")
    epochs = option_integer("--epochs", args.epochs, 1)
    batch_size = None if args.batch_size is None else option_integer("--batch-size",
                                                                      args.batch_size, 1)
    seed = option_integer("--seed", args.seed, 0)
    lr = option_number("--lr", args.lr)
    if not lr > 0:
        raise UsageError(f"--lr must be a finite number > 0; got {args.lr!r}")
    val_fraction = option_number("--val-fraction", args.val_fraction)
    if not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction must lie in [0, 1); got {args.val_fraction!r}")
    if args.activation not in ACTIVATIONS:
        raise UsageError(f"unknown activation {args.activation!r}; "
                         f"valid: {', '.join(ACTIVATIONS)}")
    hidden = _layers(args.layers)
    targets = args.target
    if len(set(targets)) != len(targets):
        raise UsageError(f"--target names a column twice: {' '.join(targets)}")
    if args.loss == "cross_entropy" and len(targets) != 1:
        raise UsageError(f"--loss cross_entropy classifies one target column; got {len(targets)}: "
                         f"{', '.join(targets)}")
    backend = pick_backend(args.backend)
    check_writable(args.out, "--out")
    if args.plot:
        try:
            demo.require_matplotlib()
        except RuntimeError as exc:
            raise UsageError(f"--plot: {exc}") from None
        check_writable(args.plot, "--plot")

    with CsvTable(args.data) as table:
        table.columns(targets, "target")
        if args.features:
            features = _names(args.features, "--features")
            both = [c for c in features if c in targets]
            if both:
                raise UsageError(f"column {both[0]!r} is a target and cannot be a feature too")
        else:
            features = [c for c in table.header if c not in targets]
        if not features:
            raise UsageError(f"{args.data}: no feature columns left besides the target(s)")
        check_size([len(features), *hidden, len(targets)], None, 0, 0, backend)
        mode = {"mse": "regression", "sse": "regression", "cross_entropy": "classes"}.get(args.loss)
        hint = f" (--loss {args.loss} needs a number in every target cell)"
        if mode is None and len(targets) > 1:  # a classifier's target is one column
            mode, hint = "regression", (" (a target of several columns is regressed, a number "
                                        "in every cell; a classifier's target is one column)")
        X, Y, classes, integers = read_training_data(table, features, targets, mode, hint)
    classify = classes is not None
    metadata = {"features": features, "targets": targets}
    if classify:
        if len(classes) < 2:
            raise UsageError(f"{args.data}: target column {targets[0]!r} has one class only "
                             f"({classes[0]!r}); a classifier needs two or more")
        loss, outputs = "cross_entropy", len(classes)
        metadata.update(task="classification", classes=classes)
    else:
        loss, outputs = args.loss or "mse", len(targets)
        metadata.update(task="regression")

    n = X.shape[0]
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and (n_val < 1 or n_val >= n):
        raise UsageError(f"--val-fraction {args.val_fraction} leaves no training or no validation "
                         f"rows out of {n}")
    layers = [X.shape[1], *hidden, outputs]
    check_size(layers, max(batch_size or n, n_val), n, outputs if classify else 0, backend)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    val, train = order[:n_val], order[n_val:]
    X_val, Y_val = X[val], Y[val]
    X, Y = X[train], Y[train]  # the copies replace the whole: never three copies at once
    # fit(standardize=True)'s standardization, done in place: (X - mean) / scale in float64
    standardizer = Standardizer().fit(X)
    for A in (X, X_val):
        A -= standardizer.mean
        A /= standardizer.scale
    net = MLP(layers, activation=args.activation, backend=backend, dtype=DTYPE, seed=seed)
    net.metadata = metadata
    if classify:
        kind = f"classifying {targets[0]} ({len(classes)} classes" + \
            (", integer labels)" if integers else ")")
    else:
        kind = f"regressing {', '.join(targets)}"
    print(f"{kind} on {len(features)} feature(s): {len(train)} training rows, {n_val} validation "
          f"rows, layers {net.layers}, backend {backend!r}")
    try:  # divergence is one error line below, not numpy's overflow warnings before it
        with np.errstate(over="ignore", invalid="ignore"):
            history = net.fit(X, Y, loss=loss, optimizer="adam", lr=lr, epochs=epochs,
                              batch_size=batch_size, standardize=False,
                              validation_data=(X_val, Y_val) if n_val else None, seed=seed,
                              verbose=not args.no_progress)
    except NonFiniteLossError as exc:
        raise UsageError(f"{exc}; no model written") from None
    line = f"final training loss {history.loss[-1]:.6g}"
    if history.val_loss:
        line += f", validation loss {history.val_loss[-1]:.6g}"
    if classify and n_val:
        accuracy = float(np.mean(net.predict(X_val).argmax(1) == Y_val))
        line += f", validation accuracy {accuracy:.4f}"
    print(line)
    net.standardizer = standardizer  # applied to the raw inputs at predict
    try:
        net.save(args.out)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: {exc.strerror or exc} (no model written)") from None
    print(f"wrote {args.out}")
    if args.plot:
        _plot(history, loss, args.plot)
    return 0


def _plot(history, loss, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(history.loss, label="training")
    if history.val_loss:
        ax.semilogy(history.val_loss, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{loss} loss")
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise UsageError(f"--plot {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    print(f"wrote {path}")


def cmd_predict(args):
    if not os.path.exists(args.model):
        raise UsageError(f"{args.model}: no such file")
    try:
        net = MLP.load(args.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    metadata = getattr(net, "metadata", None)
    if not metadata or "features" not in metadata:
        raise UsageError(f"{args.model} was not written by `backprop train` (no column names)")
    classify = metadata.get("task") == "classification"
    if args.proba and not classify:
        raise UsageError("--proba needs a classification model")
    # every row is read and predicted before any is written: a bad cell writes nothing
    outputs = []
    with CsvTable(args.data) as table:
        index = table.columns(metadata["features"], "feature")
        for lines, rows in table.blocks():
            F = net.predict(table.numbers(lines, rows, index, net.dtype))
            outputs.append(F.argmax(axis=1).astype(np.int32) if classify and not args.proba
                           else F)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    if classify:
        classes = metadata["classes"]
        writer.writerow([f"p({c})" for c in classes] if args.proba else metadata["targets"])
    else:
        writer.writerow(metadata["targets"])
    for block in outputs:
        if classify and not args.proba:
            writer.writerows([classes[i]] for i in block)
            continue
        F = block.astype(np.float64)
        if classify:  # softmax
            Z = np.exp(F - F.max(axis=1, keepdims=True))
            F = Z / Z.sum(axis=1, keepdims=True)
        writer.writerows([repr(float(v)) for v in row] for row in F)
    return 0


def add_commands(sub):
    t = sub.add_parser("train", help="fit a network to the columns of a CSV file")
    t.add_argument("data", nargs="?", help="CSV file with a header row (give it first)")
    t.add_argument("--target", nargs="+", required=True, metavar="COL",
                   help="target column(s): numbers regress; one text column makes a classifier")
    t.add_argument("--features", default=None, help="comma-separated feature columns "
                   "(default: every other column)")
    t.add_argument("--layers", default="64,64", help="hidden widths, comma-separated (default 64,64)")
    t.add_argument("--activation", default="tanh", help="hidden activation (default tanh)")
    t.add_argument("--loss", default=None, choices=LOSSES,
                   help="mse (default for numbers), sse, or cross_entropy (classes: text or "
                        "integer labels)")
    t.add_argument("--epochs", default="100", help="at least 1 (default 100)")
    t.add_argument("--batch-size", default=None, help="default: the full batch")
    t.add_argument("--lr", default="1e-3", help="Adam's learning rate (default 1e-3)")
    t.add_argument("--backend", default="auto", help="numpy, cpu, cuda or auto (cpu if built)")
    t.add_argument("--val-fraction", default="0",
                   help="share of the rows held out for validation (default 0)")
    t.add_argument("--seed", default="0", help="a non-negative integer (default 0)")
    t.add_argument("--out", required=True, metavar="MODEL.npz")
    t.add_argument("--plot", metavar="PNG", help="draw the loss curves (needs matplotlib)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict the rows of a CSV file; CSV to stdout")
    p.add_argument("model", help="a model written by `backprop train`")
    p.add_argument("data", help="CSV file with (at least) the model's feature columns")
    p.add_argument("--proba", action="store_true", help="class probabilities (classifiers)")
    p.set_defaults(func=cmd_predict)
