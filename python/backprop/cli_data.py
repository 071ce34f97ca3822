"""``backprop train`` and ``backprop predict``: fit a network to a CSV file, predict from one.

    backprop train data.csv --target y --layers 64,64 --epochs 200 --out model.npz
    backprop predict model.npz data.csv [--proba] > predictions.csv

The CSV has a header row; the feature columns (every column that is not a target, or those
named by --features) must hold numbers. One target column with any non-numeric cell (or
--loss cross_entropy) trains a classifier: its distinct values are the classes. Files are read
with the standard library's csv module.
"""

from __future__ import annotations

import csv
import math
import os
import sys

import numpy as np

from . import demo
from .backends import ACTIVATIONS
from .cli_common import UsageError, check_writable, pick_backend
from .model import MLP

LOSSES = ("mse", "sse", "cross_entropy")


def _number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_csv(path):
    """(header, rows) of a CSV file: a header row and at least one data row, all of its width."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    with f:
        try:
            rows = list(csv.reader(f))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise UsageError(f"{path} is empty: expected a header row and data rows")
    header = [name.strip() for name in rows[0]]
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise UsageError(f"{path}: the header names column(s) {', '.join(map(repr, dup))} twice")
    data = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise UsageError(f"{path} line {line} has {len(row)} cells; the header has "
                             f"{len(header)} columns")
        data.append((line, row))
    if not data:
        raise UsageError(f"{path} has a header but no data rows")
    return header, data


def numeric_columns(path, header, data, columns):
    """The named columns as a float64 matrix; the first cell that is not a finite number raises."""
    index = [header.index(c) for c in columns]
    out = np.empty((len(data), len(index)))
    for i, (line, row) in enumerate(data):
        for j, k in enumerate(index):
            value = _number(row[k])
            if value is None:
                raise UsageError(f"{path} line {line}, column {header[k]!r}: {row[k]!r} is not a "
                                 "finite number")
            out[i, j] = value
    return out


def _columns(path, header, names, what):
    for name in names:
        if name not in header:
            raise UsageError(f"{path}: unknown {what} column {name!r}; "
                             f"columns: {', '.join(header)}")
    return names


def _layers(text):
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise UsageError(f"--layers must be comma-separated positive integers; "
                         f"got {text!r}") from None
    if any(w < 1 for w in widths):
        raise UsageError(f"--layers must be comma-separated positive integers; got {text!r}")
    return widths


def cmd_train(args):
    if args.epochs < 0:
        raise UsageError(f"--epochs must be >= 0; got {args.epochs}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1; got {args.batch_size}")
    if not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction must lie in [0, 1); got {args.val_fraction}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a finite number > 0; got {args.lr}")
    if args.activation not in ACTIVATIONS:
        raise UsageError(f"unknown activation {args.activation!r}; "
                         f"valid: {', '.join(ACTIVATIONS)}")
    hidden = _layers(args.layers)
    backend = pick_backend(args.backend)
    check_writable(args.out, "--out")
    if args.plot:
        try:
            demo.require_matplotlib()
        except RuntimeError as exc:
            raise UsageError(f"--plot: {exc}") from None
        check_writable(args.plot, "--plot")

    header, data = read_csv(args.data)
    targets = _columns(args.data, header, args.target, "target")
    if args.features:
        features = _columns(args.data, header, [c.strip() for c in args.features.split(",")],
                            "feature")
    else:
        features = [c for c in header if c not in targets]
    if not features:
        raise UsageError(f"{args.data}: no feature columns left besides the target(s)")
    X = numeric_columns(args.data, header, data, features)
    t_index = [header.index(c) for c in targets]
    numeric = all(_number(row[k]) is not None for _, row in data for k in t_index)
    classify = args.loss == "cross_entropy" or not numeric
    metadata = {"features": features, "targets": targets}
    if classify:
        if len(targets) != 1:
            raise UsageError("a classification target is one column; got "
                             f"{len(targets)}: {', '.join(targets)}")
        labels = [row[t_index[0]].strip() for _, row in data]
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise UsageError(f"{args.data}: target column {targets[0]!r} has one class only "
                             f"({classes[0]!r}); a classifier needs two or more")
        lookup = {c: i for i, c in enumerate(classes)}
        Y = np.array([lookup[v] for v in labels], dtype=np.int64)
        loss, outputs = "cross_entropy", len(classes)
        metadata.update(task="classification", classes=classes)
    else:
        if args.loss not in (None, "mse", "sse"):
            raise UsageError(f"--loss {args.loss} needs a classification target")
        Y = numeric_columns(args.data, header, data, targets)
        loss, outputs = args.loss or "mse", len(targets)
        metadata.update(task="regression")

    rng = np.random.default_rng(args.seed)
    n = X.shape[0]
    n_val = int(round(args.val_fraction * n))
    if args.val_fraction > 0 and (n_val < 1 or n_val >= n):
        raise UsageError(f"--val-fraction {args.val_fraction} leaves no training or no validation "
                         f"rows out of {n}")
    order = rng.permutation(n)
    val, train = order[:n_val], order[n_val:]
    net = MLP([X.shape[1], *hidden, outputs], activation=args.activation, backend=backend,
              seed=args.seed)
    net.metadata = metadata
    print(f"{'classifying' if classify else 'regressing'} {', '.join(targets)} on "
          f"{len(features)} feature(s): {len(train)} training rows, {n_val} validation rows, "
          f"layers {net.layers}, backend {backend!r}")
    history = net.fit(X[train], Y[train], loss=loss, optimizer="adam", lr=args.lr,
                      epochs=args.epochs, batch_size=args.batch_size, standardize=True,
                      validation_data=(X[val], Y[val]) if n_val else None, seed=args.seed,
                      verbose=not args.no_progress)
    if history.loss:
        line = f"final training loss {history.loss[-1]:.6g}"
        if history.val_loss:
            line += f", validation loss {history.val_loss[-1]:.6g}"
        if classify and n_val:
            accuracy = float(np.mean(net.predict(X[val]).argmax(1) == Y[val]))
            line += f", validation accuracy {accuracy:.4f}"
        print(line)
    net.save(args.out)
    print(f"wrote {args.out}")
    if args.plot:
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
            fig.savefig(args.plot)
        except OSError as exc:
            raise UsageError(f"--plot {args.plot}: {exc.strerror or exc}") from None
        print(f"wrote {args.plot}")
    return 0


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
    header, data = read_csv(args.data)
    features = _columns(args.data, header, metadata["features"], "feature")
    X = numeric_columns(args.data, header, data, features)
    F = net.predict(X).astype(np.float64)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    if metadata.get("task") == "classification":
        classes = metadata["classes"]
        Z = F - F.max(axis=1, keepdims=True)
        P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
        if args.proba:
            writer.writerow([f"p({c})" for c in classes])
            writer.writerows([[repr(float(p)) for p in row] for row in P])
        else:
            writer.writerow(metadata["targets"])
            writer.writerows([[classes[i]] for i in P.argmax(axis=1)])
    else:
        if args.proba:
            raise UsageError("--proba needs a classification model")
        writer.writerow(metadata["targets"])
        writer.writerows([[repr(float(v)) for v in row] for row in F])
    return 0


def add_commands(sub):
    t = sub.add_parser("train", help="fit a network to the columns of a CSV file")
    t.add_argument("data", help="CSV file with a header row")
    t.add_argument("--target", nargs="+", required=True, metavar="COL",
                   help="target column(s); one text column makes a classifier")
    t.add_argument("--features", default=None, help="comma-separated feature columns "
                   "(default: every other column)")
    t.add_argument("--layers", default="64,64", help="hidden widths, comma-separated (default 64,64)")
    t.add_argument("--activation", default="tanh", help="hidden activation (default tanh)")
    t.add_argument("--loss", default=None, choices=LOSSES,
                   help="mse (default for numbers), sse, or cross_entropy (classes)")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=None, help="default: the full batch")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    t.add_argument("--backend", default="auto", help="numpy, cpu, cuda or auto (cpu if built)")
    t.add_argument("--val-fraction", type=float, default=0.0,
                   help="share of the rows held out for validation (default 0)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, metavar="MODEL.npz")
    t.add_argument("--plot", metavar="PNG", help="draw the loss curves (needs matplotlib)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict the rows of a CSV file; CSV to stdout")
    p.add_argument("model", help="a model written by `backprop train`")
    p.add_argument("data", help="CSV file with (at least) the model's feature columns")
    p.add_argument("--proba", action="store_true", help="class probabilities (classifiers)")
    p.set_defaults(func=cmd_predict)
