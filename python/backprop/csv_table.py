"""The CSV reader of ``backprop train`` and ``backprop predict``: plain decimal cells read in
blocks of rows into float64 arrays (memory grows with the numbers, not the text), and the
target column as numbers or class labels; every bad cell is an error naming its line and
column."""

from __future__ import annotations

import csv
import math
import os
import re

import numpy as np

from .cli_common import UsageError

DTYPE = np.dtype(np.float32)  # the dtype of the models `backprop train` makes
BLOCK_CELLS = 1 << 15  # cells read at a time: about 2 MB of Python strings

_NUMBER = re.compile(r"[ \t]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t]*")
INTEGER = re.compile(r"[ \t]*[+-]?[0-9]+[ \t]*")
is_number = _NUMBER.fullmatch


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


def count_rows(path):
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
        self.max_rows = count_rows(path)

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
            if not all(map(is_number, cells)):
                i = next(i for i, cell in enumerate(cells) if not is_number(cell))
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
        numeric = list(map(is_number, cells))
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
