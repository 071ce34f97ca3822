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
from .model import MLP
from .standardize import Standardizer
from .step import NonFiniteLossError

LOSSES = ("mse", "sse", "cross_entropy")
DTYPE = np.dtype(np.float32)  # the dtype of the models `backprop train` makes
MAX_PARAMETERS = 2**28  # weights and biases of one model: 1 GiB in float32, 4 GiB with Adam's state
BLOCK_CELLS = 1 << 15  # cells read at a time: about 2 MB of Python strings

_NUMBER = re.compile(r"[ \t]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t]*")
_INTEGER = re.compile(r"[ \t]*[+-]?[0-9]+[ \t]*")
_is_number = _NUMBER.fullmatch


def _why_not_a_number(cell):
    """What is wrong with a cell that ``_NUMBER`` refuses, for the error line."""
    text = cell.strip()
    if not text:
        return "is empty"
    try:
        float(text)
    except ValueError:
        return "is not a number"
    if text.lstrip("+-").lower() in ("nan", "inf", "infinity"):
        return "is not a finite number"
    return "is not a plain decimal number (ASCII digits, sign, point, exponent)"


def option_integer(option, text, minimum):
    """``text`` of an integer option as an int >= ``minimum`` (ASCII digits only)."""
    if text is None or not _INTEGER.fullmatch(text) or int(text) < minimum:
        raise UsageError(f"{option} must be an integer >= {minimum}; got {text!r}")
    return int(text)


def option_number(option, text):
    """``text`` of a number option as a finite float (a plain decimal)."""
    if text is None or not _is_number(text):
        raise UsageError(f"{option} must be a number; got {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise UsageError(f"{option} must be a finite number; got {text!r}")
    return value


def _max_rows(path):
    """An upper bound on the number of rows of a regular file (its line breaks, counted in
    binary), to allocate the arrays once; None for a pipe."""
    if not os.path.isfile(path):
        return None
    newlines = returns = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                newlines += chunk.count(b"\n")
                returns += chunk.count(b"\r")
    except OSError:
        return None
    return max(newlines, returns) + 1


class _Rows:
    """A matrix filled block by block: allocated once from the file's line count (pages that
    are never written take no memory), else (a pipe, an undercount) blocks joined at the end."""

    def __init__(self, max_rows, width, dtype=np.float64):
        self.data = None if max_rows is None else np.empty((max_rows, width), dtype)
        self.blocks, self.n = [], 0

    def append(self, block):
        if self.data is not None and self.n + len(block) > len(self.data):
            self.blocks, self.data = [self.data[:self.n]], None
        if self.data is not None:
            self.data[self.n:self.n + len(block)] = block
        else:
            self.blocks.append(block)
        self.n += len(block)

    def result(self):
        if self.data is not None:
            return self.data[:self.n]
        out = np.empty((self.n, *self.blocks[0].shape[1:]), self.blocks[0].dtype)
        start, blocks = 0, self.blocks[::-1]
        self.blocks = None
        while blocks:  # each block freed once copied: one block over the result at most
            block = blocks.pop()
            out[start:start + len(block)] = block
            start += len(block)
        return out


class CsvTable:
    """A CSV file opened for reading: its ``header``, then its data rows in blocks (``blocks``).
    A context manager; every problem with the file is a UsageError naming it."""

    def __init__(self, path):
        self.path = path
        try:
            self.file = open(path, newline="", encoding="utf-8-sig")
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"{path}: is a directory") from None
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror or exc}") from None
        self.reader = csv.reader(self.file)
        try:
            first = self._next()
            if first is None or not any(cell.strip() for cell in first):
                raise UsageError(f"{path} is empty: expected a header row and data rows")
        except BaseException:
            self.file.close()
            raise
        header = [name.strip() for name in first]
        if len(set(header)) != len(header):
            self.file.close()
            dup = sorted({h for h in header if header.count(h) > 1})
            raise UsageError(f"{path}: the header names column(s) {', '.join(map(repr, dup))} twice")
        self.header = header
        self.max_rows = _max_rows(path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def _next(self):
        try:
            return next(self.reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{self.path}: not a readable CSV file ({exc})") from None

    def columns(self, names, what):
        """The indices of the columns ``names``; an unknown one raises."""
        for name in names:
            if name not in self.header:
                raise UsageError(f"{self.path}: unknown {what} column {name!r}; "
                                 f"columns: {', '.join(self.header)}")
        return [self.header.index(name) for name in names]

    def blocks(self):
        """Yields (lines, rows): the data rows, a block at a time, and the line each ends on.
        Blank lines are skipped; a row of another width than the header's raises."""
        width = len(self.header)
        size = max(64, BLOCK_CELLS // width)
        lines, rows, seen = [], [], False
        while (row := self._next()) is not None:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if len(row) != width:
                raise UsageError(f"{self.path} line {self.reader.line_num} has {len(row)} cells; "
                                 f"the header has {width} columns")
            rows.append(row)
            lines.append(self.reader.line_num)
            if len(rows) == size:
                seen = True
                yield lines, rows
                lines, rows = [], []
        if rows:
            yield lines, rows
        elif not seen:
            raise UsageError(f"{self.path} has a header but no data rows")

    def cell_error(self, line, column, cell, why):
        return UsageError(f"{self.path} line {line}, column {self.header[column]!r}: {cell!r} {why}")

    def numbers(self, lines, rows, index, dtype, hint=""):
        """The cells of the columns ``index`` of a block as a float64 matrix. The first cell that
        is not a plain decimal number, or that lies beyond ``dtype``'s range, raises (``hint``
        added to the message)."""
        out = np.empty((len(rows), len(index)))
        for j, k in enumerate(index):
            cells = [row[k] for row in rows]
            if not all(map(_is_number, cells)):
                i = next(i for i, cell in enumerate(cells) if not _is_number(cell))
                raise self.cell_error(lines[i], k, cells[i], _why_not_a_number(cells[i]) + hint)
            out[:, j] = np.fromiter(map(float, cells), np.float64, len(cells))
        self.check_range(lines, rows, index, out, dtype)
        return out

    def check_range(self, lines, rows, index, values, dtype):
        limit = float(np.finfo(dtype).max)
        big = ~(np.abs(values) <= limit)
        if big.any():
            i, j = (int(v) for v in np.argwhere(big)[0])
            raise self.cell_error(lines[i], index[j], rows[i][index[j]],
                                  f"is beyond the range of {np.dtype(dtype).name}, the model's "
                                  f"dtype (|value| <= {limit:.4g})")


class _Labels:
    """The cells of one target column that may hold class labels, read block by block: each
    row's code in a dict of the distinct (stripped) cells, and the cells as numbers (NaN where
    not one). ``mode`` None: the column decides (numbers regress, text classifies, both is an
    error); "classes": --loss cross_entropy."""

    def __init__(self, table, column, mode):
        self.table, self.column, self.mode = table, column, mode
        self.lookup = {}
        self.codes = _Rows(table.max_rows, 1, np.int64)
        self.values = _Rows(table.max_rows, 1)
        self.first_number = self.first_text = self.not_integer = None

    def add(self, lines, rows):
        table, k = self.table, self.column
        cells = [row[k].strip() for row in rows]
        numeric = list(map(_is_number, cells))
        if all(numeric):
            values = np.fromiter(map(float, cells), np.float64, len(cells))
        else:
            values = np.array([float(c) if ok else math.nan for c, ok in zip(cells, numeric)])
            i = next(i for i, ok in enumerate(numeric) if not ok)
            if self.first_text is None:
                self.first_text = (lines[i], cells[i])
        if self.first_number is None and any(numeric):
            i = next(i for i, ok in enumerate(numeric) if ok)
            self.first_number = (lines[i], cells[i])
        if self.mode is None and self.first_number is not None:
            if self.first_text is not None:
                self._mixed()
            self.lookup = None  # numbers: a regression target, its values are all it needs
            table.check_range(lines, rows, [k], values[:, None], DTYPE)
        else:
            if "" in cells:
                i = cells.index("")
                raise table.cell_error(lines[i], k, rows[i][k], "is empty: every row needs a "
                                       "class label")
            lookup = self.lookup
            self.codes.append(np.fromiter((lookup.setdefault(c, len(lookup)) for c in cells),
                                          np.int64, len(cells))[:, None])
            if self.not_integer is None:  # NaN marks text; Inf, a number beyond float64
                bad = np.flatnonzero(~np.isnan(values) & ((values != np.round(values))
                                                          | ~(np.abs(values) <= 2.0**53)))
                if bad.size:
                    self.not_integer = (lines[bad[0]], cells[bad[0]])
        self.values.append(values[:, None])

    def _mixed(self):
        (text_line, text), (line, number) = self.first_text, self.first_number
        why = _why_not_a_number(text)
        hint = "" if why != "is not a number" else (" (--loss cross_entropy makes the column's "
                                                    "distinct values classes)")
        raise UsageError(f"{self.table.path} line {text_line}, column "
                         f"{self.table.header[self.column]!r}: {text!r} {why}, but {number!r} on "
                         f"line {line} is a number: a numeric target needs a finite number in "
                         f"every row{hint}")

    def result(self):
        """(Y, classes, integers): float64 values, None, False for a regression target; int64
        codes, the class names, and whether they are integer labels for a classifier."""
        name = self.table.header[self.column]
        values = self.values.result()
        if self.mode is None and self.first_text is None:
            return values, None, False
        values, codes = values[:, 0], self.codes.result()[:, 0]
        if self.first_text is None:  # cross_entropy on numbers: integer labels, or refused
            if self.not_integer is not None:
                line, cell = self.not_integer
                raise UsageError(f"--loss cross_entropy: target column {name!r} holds numbers that "
                                 f"are not integers ({cell!r} on line {line}); class labels are "
                                 "text or integers up to 2**53 (leave --loss out to regress on "
                                 "the numbers)")
            classes, codes = np.unique(values, return_inverse=True)
            return codes.astype(np.int64), [str(int(c)) for c in classes], True
        names = sorted(self.lookup)
        rank = np.empty(len(names), np.int64)
        rank[[self.lookup[c] for c in names]] = np.arange(len(names))
        return rank[codes], names, False


def read_training_data(table, features, targets, mode, hint=""):
    """(X, Y, classes, integers) from the data rows of ``table``: X the feature columns
    (float64); Y the targets, float64 for a regression (``classes`` None), int64 codes into
    ``classes`` for a classifier (``integers``: the labels are integers, in numeric order).
    ``mode``: "regression" (its target cells must be numbers; ``hint`` says why), "classes"
    (--loss cross_entropy), or None (the target column decides)."""
    f_index = table.columns(features, "feature")
    t_index = table.columns(targets, "target")
    labels = _Labels(table, t_index[0], mode) if mode != "regression" else None
    X = _Rows(table.max_rows, len(f_index))
    Y = _Rows(table.max_rows, len(t_index)) if labels is None else None
    for lines, rows in table.blocks():
        X.append(table.numbers(lines, rows, f_index, DTYPE))
        if labels is None:
            Y.append(table.numbers(lines, rows, t_index, DTYPE, hint))
        else:
            labels.add(lines, rows)
    if labels is None:
        return X.result(), Y.result(), None, False
    return (X.result(), *labels.result())


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
