"""Input validation: every public entry point checks its arrays here, before any kernel runs."""

from __future__ import annotations

import numpy as np

from .backends.base import ACTIVATIONS, LOSSES

DTYPES = ("float32", "float64")


def check_name(kind, name, valid):
    """``name`` if it is one of ``valid``, else a ValueError that lists the valid names."""
    if not isinstance(name, str) or name not in valid:
        plural = kind + ("es" if kind.endswith("s") else "s")
        raise ValueError(f"unknown {kind} {name!r}; valid {plural}: {', '.join(valid)}")
    return name


def check_activation(name):
    return check_name("activation", name, ACTIVATIONS)


def check_loss(name):
    return check_name("loss", name, LOSSES)


def check_dtype(dtype):
    """np.dtype for "float32"/"float64" (or the numpy types), else a ValueError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}")
    return dt


def check_layers(layers):
    """The list of layer widths [p_0, ..., p_L]: at least two positive integers."""
    try:
        widths = [int(p) for p in layers]
    except (TypeError, ValueError):
        raise TypeError(f"layers must be a list of positive integers; got {layers!r}") from None
    if len(widths) < 2:
        raise ValueError(f"layers needs at least an input and an output width; got {widths}")
    if any(p < 1 or p != q for p, q in zip(widths, layers)):
        raise ValueError(f"layer widths must be positive integers; got {list(layers)}")
    return widths


def _is_array(x):
    return hasattr(x, "shape") and hasattr(x, "dtype")


def as_matrix(x, name):
    """``x`` as an array of numbers (numpy or the backend's), without changing its values."""
    if not _is_array(x):
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of numbers: {exc}") from None
    kind = np.dtype(x.dtype).kind
    if kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}")
    return x


def check_finite(x, name):
    finite = np.isfinite(x)
    if not bool(finite.all()):
        bad = np.argwhere(~finite)[0]
        where = ", ".join(str(int(i)) for i in bad)
        raise ValueError(f"{name} contains NaN or Inf (first at index [{where}])")


def check_inputs(X, p0):
    """X as an n x p_0 array of finite numbers with n >= 1."""
    X = as_matrix(X, "X")
    if X.ndim != 2:
        hint = " (use X.reshape(-1, 1) for a single feature)" if X.ndim == 1 and p0 == 1 else ""
        raise ValueError(f"X must be 2-D (samples x {p0} features); got shape {tuple(X.shape)}{hint}")
    if X.shape[0] == 0:
        raise ValueError("X is an empty batch (0 samples)")
    if X.shape[1] != p0:
        raise ValueError(f"X has {X.shape[1]} columns but the network's input width "
                         f"(layers[0]) is {p0}")
    check_finite(X, "X")
    return X


def check_targets(Y, n, k, loss):
    """Y as an n x k array for ``loss``; integer class labels (n,) become one-hot for cross_entropy."""
    Y = as_matrix(Y, "Y")
    if loss == "cross_entropy" and (Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1 and k > 1)):
        labels = Y.reshape(-1)
        if np.dtype(labels.dtype).kind not in "iu" and not bool((labels == np.round(labels)).all()):
            raise ValueError("cross_entropy targets of one column must be integer class labels")
        if labels.shape[0] != n:
            raise ValueError(f"Y has {labels.shape[0]} labels but X has {n} rows")
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(f"class labels must lie in [0, {k - 1}] for an output width of {k}; "
                             f"got labels from {int(labels.min())} to {int(labels.max())}")
        onehot = np.zeros((n, k))
        onehot[np.arange(n), np.asarray(labels).astype(np.int64)] = 1.0
        return onehot
    if Y.ndim != 2:
        raise ValueError(f"Y must be 2-D (samples x {k} outputs); got shape {tuple(Y.shape)}"
                         + (" (use Y.reshape(-1, 1) for a single output)" if Y.ndim == 1 else ""))
    if Y.shape[0] != n:
        raise ValueError(f"Y has {Y.shape[0]} rows but X has {n} rows")
    if Y.shape[1] != k:
        raise ValueError(f"Y has {Y.shape[1]} columns but the network's output width "
                         f"(layers[-1]) is {k}")
    check_finite(Y, "Y")
    if loss == "bce" and (bool((Y < 0).any()) or bool((Y > 1).any())):
        raise ValueError("bce targets must lie in [0, 1]")
    return Y


def check_rate(value, name="lr"):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {value!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value}")
    return value
