"""Identical calls give identical bits: every kernel at any buffer address, the same fit run again
in one process between differently placed allocations, and the same fit in another process.

A result that depended on where a buffer starts (the cpu backend's vectorized loops once computed
the elements before the first 64-byte boundary with other functions than the rest) shows here as
a difference in the last bit, so everything is compared with ``tobytes()``, never a tolerance.
"""

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import backprop as bp
from backprop.backends import ACTIVATIONS, LOSSES, get_backend

from .conftest import OPTIMIZERS, _backend_params

OFFSETS = range(18)  # element offsets from a 64-byte boundary: every address class of float32 and float64


def _address(x):
    if isinstance(x, np.ndarray):
        return x.__array_interface__["data"][0]
    return int(x.data.ptr)  # a CuPy array (or the emulator's)


def place(bk, values, dtype, offset):
    """A backend array holding ``values`` that starts ``offset`` elements past a 64-byte boundary
    of a larger buffer (a slice of it, as the caller's arrays often are)."""
    values = np.asarray(values, dtype=dtype)
    itemsize = values.dtype.itemsize
    buf = bk.zeros((values.size + 64 // itemsize + offset + 1,), dtype)
    start = (-_address(buf) % 64) // itemsize + offset
    view = buf[start:start + values.size].reshape(values.shape)
    view[...] = bk.asarray(values, dtype)
    assert (_address(view) - offset * itemsize) % 64 == 0 and view.flags.c_contiguous
    return view


def bits(bk, *arrays):
    return [np.asarray(bk.to_numpy(a)).tobytes() if not np.isscalar(a) else np.float64(a).tobytes()
            for a in arrays]


def kernel_calls(rng):
    """(name, inputs, call) for every elementwise, loss and optimizer kernel and for products of the
    sizes that take each product path; call(bk, *inputs placed) returns the arrays (outputs and
    arrays updated in place) and loss values to compare."""
    def normal(*shape):
        return rng.normal(size=shape)

    n, p, q = 53, 29, 19  # 1537 and 1007 values: many packets and a partial last one
    H, A, Aq = normal(n, p), np.tanh(normal(n, p)), np.tanh(normal(n, q))
    calls = []

    def add(name, inputs, call):
        calls.append((name, inputs, call))

    for act in ACTIVATIONS:
        add(f"activation_forward {act}", [H, np.zeros((n, p))],
            lambda bk, h, out, act=act: [bk.activation_forward(h, act, out=out)])
        add(f"activation_forward {act} in place", [H],
            lambda bk, h, act=act: [bk.activation_forward(h, act, out=h)])
        add(f"activation_backward {act}", [normal(n, p), A, np.zeros((n, p))],
            lambda bk, d, a, out, act=act: [bk.activation_backward(d, a, act, out=out)])
        add(f"dense_forward {act}", [normal(n, q), normal(q, p), normal(p), np.zeros((n, p))],
            lambda bk, x, w, b, out, act=act: [bk.dense_forward(x, w, b, act, out=out)])
    for act in list(ACTIVATIONS) + [None]:
        add(f"dense_backward {act}",
            [normal(n, p), Aq, normal(q, p), np.zeros((q, p)), np.zeros(p), np.zeros((n, q))],
            lambda bk, g, a, w, dw, db, gp, act=act: list(bk.dense_backward(g, a, w, act, dw, db, gp)))
    # a 10-wide layer: the cpu backend's register-blocked narrow products
    add("dense_forward narrow", [normal(n, q), normal(q, 10), normal(10), np.zeros((n, 10))],
        lambda bk, x, w, b, out: [bk.dense_forward(x, w, b, "tanh", out=out)])
    add("dense_backward narrow",
        [normal(n, 10), Aq, normal(q, 10), np.zeros((q, 10)), np.zeros(10), np.zeros((n, q))],
        lambda bk, g, a, w, dw, db, gp: list(bk.dense_backward(g, a, w, "tanh", dw, db, gp)))
    add("dropout", [H, (rng.random((n, p)) > 0.3) / 0.7, np.zeros((n, p))],
        lambda bk, a, m, out: [bk.dropout(a, m, out=out)])
    add("colsum", [H, np.zeros(p)], lambda bk, g, out: [bk.colsum(g, out=out)])
    F = 3 * normal(n, q)
    targets = {"sse": normal(n, q), "mse": normal(n, q), "bce": (rng.random((n, q)) < 0.5) * 1.0,
               "cross_entropy": np.eye(q)[rng.integers(0, q, n)]}
    for loss in LOSSES:
        add(f"loss {loss}", [F, targets[loss], np.zeros((n, q))],
            lambda bk, f, y, g, loss=loss: [bk.loss(loss, f, y, G=g)[0], g])
    W = normal(p, q)
    add("weight_penalty", [W, normal(p, q)], lambda bk, w, dw: [bk.weight_penalty(w, dw, 0.3, 0.7), dw])

    # learning rates of order one, so that the last bits of each update reach the parameter's
    def sgd(bk, w, g):
        bk.sgd_update(w, g, None, 0.7)
        return [w]

    def momentum(bk, w, g, v, nesterov):
        bk.sgd_update(w, g, v, 0.7, 0.9, nesterov)
        return [w, v]

    def adam(bk, w, g, m, v):
        bk.adam_update(w, g, m, v, 0.7, 0.9, 0.999, 1e-8, 3)
        return [w, m, v]

    add("sgd_update", [W, normal(p, q)], sgd)
    add("sgd_update momentum", [W, normal(p, q), normal(p, q)], lambda bk, *a: momentum(bk, *a, False))
    add("sgd_update nesterov", [W, normal(p, q), normal(p, q)], lambda bk, *a: momentum(bk, *a, True))
    add("adam_update", [W, normal(p, q), normal(p, q), 0.1 + rng.random((p, q))], adam)
    # tiny (m+n+k < 20), narrow, Eigen-sized and OpenBLAS-sized products, every transpose
    for m, k, nn in [(5, 7, 6), (1, 1, 17), (9, 40, 33), (64, 256, 128)]:
        for ta in (False, True):
            for tb in (False, True):
                add(f"gemm {m}x{k}x{nn} trans_a={ta} trans_b={tb}",
                    [normal(k, m) if ta else normal(m, k), normal(nn, k) if tb else normal(k, nn),
                     normal(m, nn)],
                    lambda bk, a, b, c, ta=ta, tb=tb:
                    [bk.gemm(a, b, trans_a=ta, trans_b=tb), bk.gemm(a, b, c, ta, tb, 0.5, -2.0)])
    return calls


def test_every_kernel_same_bits_at_every_offset(backend, dtype):
    """Each kernel on inputs (and outputs) starting 0..17 elements past a 64-byte boundary gives the
    bits it gives at offset 0; the arrays of one call are also placed at different offsets from
    each other."""
    bk = get_backend(backend)
    failures = []
    for name, inputs, call in kernel_calls(np.random.default_rng(7)):
        reference = None
        for offset in OFFSETS:
            for stride in ((0, 5) if offset else (0,)):  # all arrays at one offset, then spread
                placed = [place(bk, x, dtype, (offset + stride * i) % len(OFFSETS)) for i, x in enumerate(inputs)]
                got = bits(bk, *call(bk, *placed))
                if reference is None:
                    reference = got
                elif got != reference:
                    failures.append(f"{name} at offset {offset} (stride {stride})")
                    break
            else:
                continue
            break
    assert not failures, f"{backend}/{dtype}: results depend on the address: " + "; ".join(failures)


# ---- whole fits, repeated in one process ------------------------------------------------------------

def fit_bits(backend, dtype, opt, activation, loss, fused, offset, epochs=6):
    """Trains a small network and returns (parameter bytes, loss history bytes); X and Y are slices
    starting ``offset`` elements into larger arrays."""
    rng = np.random.default_rng(11)
    n, p, k = 45, 3, 4
    X = rng.normal(size=(n, p))
    if loss == "cross_entropy":
        Y = np.eye(k)[rng.integers(0, k, n)]
    elif loss == "bce":
        Y = (rng.random((n, k)) < 0.5) * 1.0
    else:
        Y = rng.normal(size=(n, k))
    Xb = np.empty(n * p + offset, dtype=dtype)
    Xb[offset:] = X.ravel()
    Yb = np.empty(n * k + offset, dtype=dtype)
    Yb[offset:] = Y.ravel()
    net = bp.MLP([p, 19, 7, k], activation=activation, backend=backend, dtype=dtype, seed=5)
    history = net.fit(Xb[offset:].reshape(n, p), Yb[offset:].reshape(n, k), loss=loss,
                      optimizer=OPTIMIZERS[opt](), epochs=epochs, batch_size=None if opt == "gd" else 16,
                      seed=2, fused=fused)
    params = b"".join(np.ascontiguousarray(x).tobytes() for x in net.weights + net.biases)
    return params, np.asarray(history.loss, dtype=np.float64).tobytes()


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # numpy's sigmoid saturating
@pytest.mark.parametrize("fused", [None, False], ids=["fused", "kernels"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_same_fit_same_bits_in_one_process(backend, dtype, opt, fused):
    """The same fit three times, with odd-sized allocations kept alive in between (so the model's
    buffers land elsewhere) and X, Y at odd offsets: the same parameters and loss history, bit for bit,
    for every activation and loss. fused=None is the backend's fused path where it has one."""
    if fused is None and not hasattr(get_backend(backend), "make_trainer"):
        pytest.skip(f"backend {backend!r} has no fused path")
    different = []
    for activation in ("tanh", "sigmoid", "relu"):
        for loss in LOSSES:
            runs, junk = [], []
            for offset in (0, 1, 7):
                junk.append(np.empty(4 * offset + 3, dtype=np.uint8))  # shifts what the allocator returns next
                junk.append(np.ones(offset * 13 + 5))
                runs.append(fit_bits(backend, dtype, opt, activation, loss, fused, offset))
            if any(r != runs[0] for r in runs[1:]):
                different.append(f"{activation}/{loss}")
    assert not different, f"{backend}/{dtype}/{opt}: repeated fits differ for " + ", ".join(different)


# ---- the same fit in another process ----------------------------------------------------------------

CHILD = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from tests.test_reproducible import fit_bits
    junk = [np.empty(int(n)) for n in sys.argv[1:]]  # a different allocation pattern per process
    digests = []
    for offset in (0, 3):
        junk.append(np.empty(offset * 7 + 1))
        params, losses = fit_bits({backend!r}, {dtype!r}, "adam", "sigmoid", "bce", None, offset, epochs=8)
        digests.append(hashlib.sha256(params + losses).hexdigest())
    print(" ".join(digests))
""")


def test_same_fit_same_bits_in_another_process(backend, dtype):
    """A subprocess runs the same fit twice (different allocation patterns before each) and prints
    the sha256 of the parameters and losses; a second subprocess, and this process, agree."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = CHILD.format(root=root, backend=backend, dtype=dtype)
    outputs = []
    for junk in (["3"], ["1000", "17", "5"]):
        out = subprocess.run([sys.executable, "-c", code, *junk], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        outputs.extend(out.stdout.split())
    params, losses = fit_bits(backend, dtype, "adam", "sigmoid", "bce", None, 5, epochs=8)
    outputs.append(hashlib.sha256(params + losses).hexdigest())
    assert len(outputs) == 5 and len(set(outputs)) == 1, outputs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("width", [1, 10, 20, 32])
@pytest.mark.parametrize("name", [p for p in _backend_params() if p.values[0] != "numpy"])
def test_a_row_does_not_depend_on_its_position(name, dtype, width):
    """dense_forward on rows in another order gives the same rows, bit for bit, on the native
    backends: the cpu backend's narrow kernels compute the last n % (rows side by side) rows with
    the same code as the others (scikit-learn checks this of predict). Not numpy's: its products
    are OpenBLAS's, which takes other kernels for the rows at the edge of a tile."""
    be = get_backend(name)
    rng = np.random.default_rng(width)
    A = rng.normal(size=(21, 100)).astype(dtype)
    W = (rng.normal(size=(100, width)) / 10).astype(dtype)
    b = rng.normal(size=width).astype(dtype)
    order = rng.permutation(21)
    H = be.to_numpy(be.dense_forward(be.asarray(A, dtype), be.asarray(W, dtype), be.asarray(b, dtype), "identity"))
    Hp = be.to_numpy(be.dense_forward(be.asarray(A[order], dtype), be.asarray(W, dtype), be.asarray(b, dtype),
                                      "identity"))
    np.testing.assert_array_equal(H[order], Hp)
