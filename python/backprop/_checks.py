"""Input validation: every public entry point checks its arrays here, before any kernel runs."""

from __future__ import annotations

import numpy as np

from .backends.names import ACTIVATIONS, LOSSES

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


def _index(flat_hit):
    return ", ".join(str(int(i)) for i in flat_hit)


def as_matrix(x, name):
    """``x`` as an array of numbers (numpy or the backend's), without changing its values.

    Anything numpy can convert (lists, pandas Series and DataFrames, objects with ``__array__``)
    becomes a numpy array; an array numpy refuses to convert implicitly (a CuPy array) is kept
    as it is. A numpy masked array is accepted only when nothing is masked (its data is used):
    a masked entry is not a number, so it raises.
    """
    if isinstance(x, np.ma.MaskedArray):
        masked = np.ma.getmaskarray(x)
        if bool(masked.any()):
            raise ValueError(f"{name} is a masked array with masked entries (first at index "
                             f"[{_index(np.argwhere(masked)[0])}]); masked entries are not numbers: "
                             f"fill them ({name}.filled(value)) or drop those rows first")
        x = np.ma.getdata(x)
    if type(x) is not np.ndarray and not hasattr(x, "__cuda_array_interface__"):
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists; device arrays that refuse an implicit copy
            if not _is_array(x):
                raise TypeError(f"{name} must be an array of numbers: {exc}") from None
    try:
        kind = np.dtype(x.dtype).kind
    except TypeError:
        raise TypeError(f"{name} must be an array of numbers; got {type(x).__name__}") from None
    if kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}")
    return x


def check_finite(x, name):
    finite = np.isfinite(x)
    if not bool(finite.all()):
        bad = np.argwhere(~finite)[0]
        raise ValueError(f"{name} contains NaN or Inf (first at index [{_index(bad)}])")


def check_fits(x, dtype, name, hint=""):
    """Raises if finite values of ``x`` would overflow to Inf when cast to ``dtype``.

    A float64 value above float32's largest (about 3.4e38) becomes Inf in a float32 model; so
    does a long double above float64's largest in a float64 model. Integers always fit.
    """
    src, dtype = np.dtype(x.dtype), np.dtype(dtype)
    if src.kind != "f" or src.itemsize <= dtype.itemsize:
        return x
    limit = float(np.finfo(dtype).max)
    big = abs(x) > limit
    if bool(big.any()):
        bad = np.argwhere(big)[0]
        value = float(x[tuple(int(i) for i in bad)])
        raise ValueError(f"{name} has values beyond the range of the model's dtype "
                         f"{np.dtype(dtype).name} (|value| > {limit:.4g}): {value:.4g} at index "
                         f"[{_index(bad)}] would become Inf{hint}")
    return x


def cast(x, dtype, name, hint=""):
    """Host array ``x`` as a C-contiguous array of ``dtype`` whose values are all finite.

    NaN or Inf in ``x`` raise ``check_finite``'s error, finite values that overflow ``dtype``
    (a float64 above float32's range) ``check_fits``'s. One test of the cast array serves both.
    """
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(x, dtype=dtype)
    if not np.isfinite(out).all():
        check_finite(x, name)
        check_fits(x, dtype, name, hint)
        raise ValueError(f"{name} contains values that are not finite in {np.dtype(dtype).name}")
    return out


def check_inputs(X, p0, finite=True):
    """X as an n x p_0 array of numbers with n >= 1, all finite (unless ``finite`` is False:
    the caller checks them, e.g. with ``cast``)."""
    X = as_matrix(X, "X")
    if X.ndim != 2:
        hint = " (use X.reshape(-1, 1) for a single feature)" if X.ndim == 1 and p0 == 1 else ""
        raise ValueError(f"X must be 2-D (samples x {p0} features); got shape {tuple(X.shape)}{hint}")
    if X.shape[0] == 0:
        raise ValueError("X is an empty batch (0 samples)")
    if X.shape[1] != p0:
        raise ValueError(f"X has {X.shape[1]} columns but the network's input width "
                         f"(layers[0]) is {p0}")
    if finite:
        check_finite(X, "X")
    return X


def check_targets(Y, n, k, loss):
    """Y as an n x k array for ``loss``; integer class labels (n,) become one-hot for cross_entropy."""
    Y = as_matrix(Y, "Y")
    if loss == "cross_entropy" and (Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1 and k > 1)):
        labels = Y.reshape(-1)
        check_finite(labels, "Y")
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
        hint = ""
        if Y.ndim == 1 and k == 1:
            hint = " (use Y.reshape(-1, 1) for a single output)"
        elif Y.ndim == 1:
            hint = (f" (for class labels 0..{k - 1} use loss=\"cross_entropy\", which takes them "
                    f"as they are; loss {loss!r} needs one column per output)")
        raise ValueError(f"Y must be 2-D (samples x {k} outputs); got shape {tuple(Y.shape)}{hint}")
    if Y.shape[0] != n:
        raise ValueError(f"Y has {Y.shape[0]} rows but X has {n} rows")
    if Y.shape[1] != k:
        raise ValueError(f"Y has {Y.shape[1]} columns but the network's output width "
                         f"(layers[-1]) is {k}")
    check_finite(Y, "Y")
    if loss == "bce" and (bool((Y < 0).any()) or bool((Y > 1).any())):
        raise ValueError("bce targets must lie in [0, 1]")
    return Y


def check_number(value, name):
    """``value`` as a finite float, else a TypeError (not a number) or ValueError (NaN, Inf)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {value!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}")
    return value


def check_count(value, name, minimum):
    """``value`` as an int >= minimum (an integer-valued number), else a ValueError."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_rate(value, name="lr"):
    """A finite number >= 0 (learning rates, penalties, momentum)."""
    try:
        value = check_number(value, name)
    except ValueError:
        value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value}")
    return value


def check_in(value, name, low, high, low_open=False, high_open=True):
    """A finite number in [low, high) (the brackets as ``low_open``/``high_open`` say)."""
    value = check_number(value, name)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}; got {value}")
    return value
