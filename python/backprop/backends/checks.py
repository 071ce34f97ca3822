"""The argument checks of every kernel call, in one place (used by ``base.Backend``).

A ``KernelArgs`` collects the arrays of one kernel call: each must be an array of the backend,
C-contiguous, not empty, of float32 or float64, all of one dtype; outputs are allocated when not
given, and no output may overlap an input or another output (except an elementwise kernel's
output written into its first input, see base.py). Every failure is a TypeError or ValueError
whose message starts with the backend and the kernel, e.g. ``cpu gemm: B must be 2-D``.
"""

from __future__ import annotations

import math

import numpy as np

from .names import ACTIVATIONS, LOSSES

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class KernelArgs:
    """The arrays of one kernel call on ``backend``, checked as they are added."""

    def __init__(self, backend, kernel):
        self.backend, self.kernel = backend, kernel
        self.dtype = None
        self.inputs = []   # (label, array)
        self.outputs = []  # (label, array)

    def fail(self, exc, message):
        raise exc(f"{self.backend.name} {self.kernel}: {message}")

    # ---- arrays ---------------------------------------------------------------------------

    def _array(self, label, x, shape, ndim):
        bk = self.backend
        if not bk.is_array(x):
            self.fail(TypeError, f"{label} must be an array of backend {bk.name!r} "
                                 f"(backend.asarray(x, dtype)); got {type(x).__name__}")
        dtype = np.dtype(x.dtype)
        if dtype not in _FLOATS:
            self.fail(TypeError, f"{label} must be float32 or float64; got {dtype}")
        if self.dtype is None:
            self.dtype = dtype
        elif dtype != self.dtype:
            self.fail(TypeError, f"{label} is {dtype} but the other arrays are {self.dtype}")
        if ndim is not None and x.ndim != ndim:
            self.fail(ValueError, f"{label} must be {ndim}-D; got shape {tuple(x.shape)}")
        if shape is not None and tuple(x.shape) != tuple(shape):
            self.fail(ValueError, f"{label} must have shape {tuple(shape)}; got {tuple(x.shape)}")
        if x.size == 0:
            self.fail(ValueError, f"{label} is empty (shape {tuple(x.shape)})")
        if not x.flags.c_contiguous:
            self.fail(ValueError, f"{label} must be C-contiguous (backend.asarray makes it so)")
        return x

    def input(self, label, x, shape=None, ndim=None):
        """An array the kernel reads."""
        self.inputs.append((label, self._array(label, x, shape, ndim)))
        return x

    def output(self, label, x, shape, in_place_of=None):
        """An array the kernel writes (allocated when None); ``in_place_of``: the one input it
        may be (the elementwise kernels' first input)."""
        if x is None:
            if self.dtype is None:
                self.fail(TypeError, f"{label} cannot be allocated before the inputs are known")
            x = self.backend.empty(tuple(shape), self.dtype)
            self.outputs.append((label, x))
            return x
        self._array(label, x, shape, None)
        if not x.flags.writeable:
            self.fail(ValueError, f"{label} is read-only")
        for other_label, other in self.inputs + self.outputs:
            if other is in_place_of and self.backend.same_buffer(x, other):
                continue
            if self.backend.may_overlap(x, other):
                allowed = f" (only {in_place_of_label(self, in_place_of)} may be written in place)" \
                    if in_place_of is not None else ""
                self.fail(ValueError, f"{label} overlaps {other_label}{allowed}")
        self.outputs.append((label, x))
        return x

    def updated(self, label, x, shape=None):
        """An array the kernel reads and writes in place (a parameter, a gradient accumulator,
        an optimizer state): an output that must exist."""
        if x is None:
            self.fail(TypeError, f"{label} must be an array, not None")
        return self.output(label, x, shape)

    # ---- scalars and names ----------------------------------------------------------------

    def number(self, label, value, low=None, high=None, high_open=False, low_open=False):
        """A finite real number within [low, high] (open ends where asked)."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            self.fail(TypeError, f"{label} must be a number; got {value!r}")
        if not math.isfinite(value):
            self.fail(ValueError, f"{label} must be finite; got {value}")
        if low is not None and (value < low or (low_open and value == low)):
            self.fail(ValueError, f"{label} must be {'>' if low_open else '>='} {low}; got {value}")
        if high is not None and (value > high or (high_open and value == high)):
            self.fail(ValueError, f"{label} must be {'<' if high_open else '<='} {high}; got {value}")
        return value

    def activation(self, name, allow_none=False):
        if name is None and allow_none:
            return None
        if not isinstance(name, str) or name not in ACTIVATIONS:
            self.fail(ValueError, f"unknown activation {name!r}; valid activations: "
                                  f"{', '.join(ACTIVATIONS)}" + (" or None" if allow_none else ""))
        return name

    def loss(self, name):
        if not isinstance(name, str) or name not in LOSSES:
            self.fail(ValueError, f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
        return name


def in_place_of_label(args, x):
    for label, other in args.inputs:
        if other is x:
            return label
    return "the first input"
