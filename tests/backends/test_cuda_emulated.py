"""The cuda backend on the CPU: its kernels (cuda/*.cu) compiled by the host compiler with the
emulation header (tests/cuda_emu), driven by the real adapter (backends/cuda/) through a fake
CuPy, and compared with the numpy backend.

This runs in every CI run, GPU or not. It checks the kernels' arithmetic (every tile
configuration and transpose of the matrix product on sizes that are not multiples of any tile,
the fused epilogues against the unfused kernels, the reductions, losses and updates), the
adapter (grid sizes, argument types against the kernels' C signatures, checks before launch,
no writes outside any buffer, launch counts, one compilation) and the whole model (fit,
loss_and_grad, gradcheck) on the cuda backend. What it cannot check is the hardware: NVRTC,
timing, and races that sequential blocks hide; tests/backends/test_cuda_gpu.py does that on a GPU.
"""

import shutil

import numpy as np
import pytest

import backprop as bp
from backprop.backends import ACTIVATIONS
from backprop.backends.cuda import (GEMM_CONFIGS, CudaBackend, CudaKernelError, GraphContext,
                                   launchable_kernels, module_source, sources_dir)
from backprop.backends.numpy_backend import NumpyBackend

from ..conftest import assert_close
from ..cuda_emu import emulator, fakecupy
from . import test_kernels

pytestmark = pytest.mark.skipif(shutil.which(emulator.CXX) is None,
                                reason=f"no host C++ compiler ({emulator.CXX}) to emulate the cuda kernels")

SIZES = [1, 7, 33, 65, 129]  # 1, and non-multiples of every tile (32, 64, 128) and of BK
ref = NumpyBackend()


@pytest.fixture(scope="module")
def emu():
    return CudaBackend(cupy=fakecupy)


@pytest.fixture
def backend(emu):
    """The kernel tests of test_kernels.py, collected here again, run on the emulated backend."""
    return emu


for _name in dir(test_kernels):
    if _name.startswith("test_"):
        globals()[_name] = getattr(test_kernels, _name)


def dev(bk, x, dtype):
    return bk.asarray(np.array(x), dtype)


def host(bk, x):
    return np.asarray(bk.to_numpy(x), dtype=np.float64)


# ---- the matrix product: every configuration, transpose and awkward size ---------------------

@pytest.mark.parametrize("config", list(GEMM_CONFIGS))
@pytest.mark.parametrize("ops", ["nn", "tn", "nt", "tt"])
def test_gemm_every_config_and_transpose(emu, dtype, rng, config, ops):
    ta, tb = ops[0] == "t", ops[1] == "t"
    for m, k, n in [(1, 1, 1), (7, 129, 33), (65, 7, 129), (129, 65, 1), (33, 33, 65), (4, 8, 12)]:
        A = rng.normal(size=(k, m) if ta else (m, k))
        B = rng.normal(size=(n, k) if tb else (k, n))
        C0 = rng.normal(size=(m, n))
        out = dev(emu, C0, dtype)
        before = emu.launches
        with emu.gemm_config_forced(config):
            emu.gemm(dev(emu, A, dtype), dev(emu, B, dtype), out=out, trans_a=ta, trans_b=tb,
                     alpha=0.75, beta=0.5)
        assert emu.launches - before == 1
        expected = 0.75 * ((A.T if ta else A) @ (B.T if tb else B)) + 0.5 * C0
        assert_close(host(emu, out), expected, dtype, what=f"gemm {config} {ops} {m}x{k}x{n}")


@pytest.mark.parametrize("config", list(GEMM_CONFIGS))
def test_gemm_scalar_loads_match_vector_loads(emu, dtype, rng, config):
    """Operands at an address that is not 16-byte aligned take the scalar load path; the
    numbers must be those of the vector path (same sums in the same order)."""
    m, k, n = 36, 40, 44  # multiples of the vector width: the vector path when aligned
    A, B = rng.normal(size=(m, k)), rng.normal(size=(k, n))
    with emu.gemm_config_forced(config):
        aligned = host(emu, emu.gemm(dev(emu, A, dtype), dev(emu, B, dtype)))
    bufA = emu.zeros((m * k + 1,), dtype)
    bufB = emu.zeros((k * n + 1,), dtype)
    bufA[1:] = dev(emu, A.ravel(), dtype)
    bufB[1:] = dev(emu, B.ravel(), dtype)
    shiftedA, shiftedB = bufA[1:].reshape(m, k), bufB[1:].reshape(k, n)
    assert shiftedA.data.ptr % 16 != 0
    with emu.gemm_config_forced(config):
        scalar = host(emu, emu.gemm(shiftedA, shiftedB))
    np.testing.assert_array_equal(scalar, aligned)
    assert_close(scalar, A @ B, dtype, what="gemm")


def test_gemm_config_choice(emu):
    assert emu.gemm_config(4096, 4096) == "L"
    assert emu.gemm_config(100, 10) == "S"
    assert {emu.gemm_config(m, n) for m in SIZES for n in SIZES} == {"S", "M", "L"}


# ---- fused epilogues against the unfused kernels ------------------------------------------------

@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_forward_fused_equals_unfused(emu, dtype, rng, activation):
    for n, p, q in [(1, 1, 1), (7, 33, 65), (129, 7, 33), (65, 129, 7)]:
        A, W, b = rng.normal(size=(n, p)), rng.normal(size=(p, q)), rng.normal(size=q)
        Ad, Wd, bd = dev(emu, A, dtype), dev(emu, W, dtype), dev(emu, b, dtype)
        fused = host(emu, emu.dense_forward(Ad, Wd, bd, activation))
        H = dev(emu, np.tile(b, (n, 1)), dtype)
        emu.gemm(Ad, Wd, out=H, beta=1.0)  # H = A W + 1 bᵀ
        plain = host(emu, emu.activation_forward(H, activation))
        assert_close(fused, plain, dtype, what=f"fused forward {activation}")
        assert_close(fused, host(ref, ref.dense_forward(A, W, b, activation)), dtype,
                     what=f"forward vs numpy {activation}")


@pytest.mark.parametrize("activation_prev", list(ACTIVATIONS) + [None])
def test_dense_backward_fused_equals_unfused(emu, dtype, rng, activation_prev):
    for n, p, q in [(1, 1, 1), (7, 33, 65), (129, 7, 33), (65, 129, 7), (300, 5, 3)]:
        G, W = rng.normal(size=(n, q)), rng.normal(size=(p, q))
        A_prev = test_kernels.ref_act(rng.normal(size=(n, p)), activation_prev or "identity")
        Gd, Ad, Wd = dev(emu, G, dtype), dev(emu, A_prev, dtype), dev(emu, W, dtype)
        dW, db, G_prev = (host(emu, x) for x in emu.dense_backward(Gd, Ad, Wd, activation_prev))
        # unfused: separate products, the stand-alone column sum, the elementwise backward
        assert_close(dW, host(emu, emu.gemm(Ad, Gd, trans_a=True)), dtype, what="dW")
        assert_close(db, host(emu, emu.colsum(Gd)), dtype, what="db fused vs colsum kernel")
        dA = emu.gemm(Gd, Wd, trans_b=True)
        plain = dA if activation_prev is None else emu.activation_backward(dA, Ad, activation_prev)
        assert_close(G_prev, host(emu, plain), dtype, what="G_prev fused vs unfused")
        expected = ref.dense_backward(G, A_prev, W, activation_prev)
        for got, want, what in zip((dW, db, G_prev), expected, ("dW", "db", "G_prev")):
            assert_close(got, want, dtype, what=f"{what} vs numpy")


def test_colsum_split_over_rows(emu, dtype, rng):
    """Few columns and many rows: the rows are split over blocks and a second launch adds
    the partial sums."""
    for n, p in [(1000, 1), (1000, 3), (4097, 33), (257, 65)]:
        G = rng.normal(size=(n, p))
        before = emu.launches
        got = host(emu, emu.colsum(dev(emu, G, dtype)))
        assert_close(got, G.sum(axis=0), dtype, what=f"colsum {n}x{p}")
        assert emu.launches - before in (1, 2)


@pytest.mark.parametrize("loss", ["sse", "mse", "cross_entropy", "bce"])
def test_loss_many_blocks(emu, dtype, rng, loss):
    """Sizes that need many blocks, so the last-block total adds many partial sums."""
    n, k = (3000, 3) if loss != "cross_entropy" else (2000, 5)
    F = rng.normal(size=(n, k))
    Y = np.eye(k)[rng.integers(0, k, n)] if loss == "cross_entropy" else rng.random((n, k))
    value, G = emu.loss(loss, dev(emu, F, dtype), dev(emu, Y, dtype))
    value_ref, G_ref = ref.loss(loss, F, Y)
    assert_close(float(value), value_ref, dtype, scale=max(abs(value_ref), 1.0), what=loss)
    assert_close(host(emu, G), G_ref, dtype, what=f"{loss} gradient")
    value2, _ = emu.loss(loss, dev(emu, F, dtype), dev(emu, Y, dtype))  # the counter rearmed
    assert float(value2) == float(value)


def test_graph_mode_updates_read_device_hyperparameters_and_skip(emu, dtype, rng):
    p, g, m, v = (rng.normal(size=(7, 5)) for _ in range(4))
    v = np.abs(v)
    P1, P2 = dev(emu, p, dtype), dev(emu, p, dtype)
    M1, M2, V1, V2 = dev(emu, m, dtype), dev(emu, m, dtype), dev(emu, v, dtype), dev(emu, v, dtype)
    emu.adam_update(P1, dev(emu, g, dtype), M1, V1, 1e-2, 0.9, 0.999, 1e-8, 4)
    skip = emu.zeros((1,), np.int64)
    ctx = GraphContext(emu, dtype, slots=1, skip=skip)
    ctx.hyper[...] = dev(emu, [1e-2, 1 - 0.9 ** 4, 1 - 0.999 ** 4], dtype)
    with emu.graph_mode(ctx):  # lr and step from the arguments are ignored
        emu.adam_update(P2, dev(emu, g, dtype), M2, V2, 99.0, 0.9, 0.999, 1e-8, 1)
    np.testing.assert_array_equal(host(emu, P1), host(emu, P2))
    Q = dev(emu, p, dtype)
    ctx.hyper[...] = dev(emu, [0.5, 0, 0], dtype)
    with emu.graph_mode(ctx):
        emu.sgd_update(Q, dev(emu, g, dtype), None, 99.0)
    assert_close(host(emu, Q), p - 0.5 * g, dtype, what="sgd lr from hyper")
    skip[...] = 1
    with emu.graph_mode(ctx):
        emu.sgd_update(Q, dev(emu, g, dtype), None, 99.0)
        emu.adam_update(P2, dev(emu, g, dtype), M2, V2, 99.0, 0.9, 0.999, 1e-8, 1)
    assert_close(host(emu, Q), p - 0.5 * g, dtype, what="skipped sgd")
    np.testing.assert_array_equal(host(emu, P1), host(emu, P2))
    # outside graph mode the arguments count again
    emu.sgd_update(Q, dev(emu, g, dtype), None, 0.25)
    assert_close(host(emu, Q), p - 0.75 * g, dtype, what="sgd eager")


def test_graph_mode_reductions_fill_the_context_slots_in_order(emu, rng):
    F, Y, W = rng.normal(size=(9, 2)), rng.normal(size=(9, 2)), rng.normal(size=(4, 3))
    ctx = GraphContext(emu, "float64", slots=2)
    with emu.graph_mode(ctx):
        value, _ = emu.loss("mse", dev(emu, F, "float64"), dev(emu, Y, "float64"))
        penalty = emu.weight_penalty(dev(emu, W, "float64"), emu.zeros((4, 3), "float64"), 0.0, 2.0)
        with pytest.raises(RuntimeError, match="slots"):
            emu.weight_penalty(dev(emu, W, "float64"), emu.zeros((4, 3), "float64"), 0.0, 2.0)
    got = host(emu, ctx.values)
    assert got[0] == pytest.approx(((F - Y) ** 2).mean(), rel=1e-12) and float(value) == got[0]
    assert got[1] == pytest.approx((W ** 2).sum(), rel=1e-12) and float(penalty) == got[1]


def test_softmax_cross_entropy_beyond_one_pass_of_the_grid(emu, dtype, rng):
    """More than 8 x 1024 rows: every block walks several groups of 8 rows, so the barriers
    between row groups (the shared row maximum and row sum are reused) must hold; the value and
    G are checked against numpy row by row."""
    n, k = 8 * 1024 + 77, 5
    F = 3 * rng.normal(size=(n, k))
    Y = np.eye(k)[rng.integers(0, k, n)]
    value, G = emu.loss("cross_entropy", dev(emu, F, dtype), dev(emu, Y, dtype))
    value_ref, G_ref = ref.loss("cross_entropy", F, Y)
    assert_close(float(value), value_ref, dtype, scale=max(abs(value_ref), 1.0), what="value")
    assert_close(host(emu, G), G_ref, dtype, what="G")


@pytest.mark.parametrize("stuck", [1, 5, 35, 10**6])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "penalty"])
def test_a_stuck_reduction_counter_gives_nan_not_a_wrong_number(rng, monkeypatch, loss, stuck):
    """The counter left non-zero and the reset before the launch missing: NaN (block 0 sets
    the value to NaN first; a block that takes the last ticket too early adds block sums the
    previous launch poisoned)."""
    bk = CudaBackend(cupy=fakecupy)
    n, k = 3000, 3  # 36 blocks (cross_entropy: 375)
    F = dev(bk, rng.normal(size=(n, k)), "float64")
    Y = dev(bk, np.eye(k)[rng.integers(0, k, n)], "float64")

    def reduce():
        if loss == "penalty":
            return float(bk.weight_penalty(F, bk.zeros((n, k), "float64"), 0.5, 0.0))
        return float(bk.loss(loss, F, Y)[0])

    right = reduce()
    assert np.isfinite(right)
    _, counter = bk.reduction_workspace()
    counter[...] = stuck  # as a launch aborted midway leaves it
    monkeypatch.setattr(bk, "_reset_counter", lambda counter: None)
    assert np.isnan(reduce())
    monkeypatch.undo()
    counter[...] = stuck
    assert reduce() == right  # the reset before each launch makes it right again


def test_the_counter_is_reset_before_every_reduction_launch(emu, rng):
    F = dev(emu, rng.normal(size=(300, 3)), "float64")
    right = float(emu.loss("sse", F, F * 0.5)[0])
    _, counter = emu.reduction_workspace()
    for stuck in (1, 7, 2**31):
        counter[...] = stuck
        assert float(emu.loss("sse", F, F * 0.5)[0]) == right
        assert int(counter.get()[0]) == 0


# ---- the adapter: launches, compilation, checks -------------------------------------------------

# ---- Taylor-mode derivatives w.r.t. the inputs (cuda/taylor.cu + the stacked gemm products) --

TAYLOR_CASES = [
    # (widths, activations, first, second): widths not multiples of any tile, a mixed second
    # derivative in both orders, a pure one, a stream only needed by a pair, a width-1 layer
    ((5, 33, 7, 3), ("tanh", "sigmoid", "identity"), (0, 4, 2), ((0, 4), (2, 2), (4, 0))),
    ((3, 65, 1, 2), ("sigmoid", "tanh", "tanh"), (2, 1), ((1, 2),)),
    ((1, 1), ("tanh",), (0,), ((0, 0),)),
    ((4, 17, 129), ("leaky_relu", "relu"), (3, 0), ()),    # first derivatives only
    ((2, 9, 3), ("tanh", "sigmoid"), (), ()),               # no streams at all
]


@pytest.mark.parametrize("n", [1, 37, 130])
@pytest.mark.parametrize("case", range(len(TAYLOR_CASES)))
def test_taylor_kernels_match_numpy(emu, dtype, rng, n, case):
    widths, acts, first, second = TAYLOR_CASES[case]
    X = rng.normal(size=(n, widths[0]))
    Ws = [rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(widths[:-1], widths[1:])]
    bs = [rng.normal(size=b) for b in widths[1:]]
    cast = (lambda x: np.asarray(x, np.float32).astype(np.float64)) if dtype == "float32" else np.asarray
    # the reference in float64 on the float32-rounded inputs
    F, dF, d2F, saved = ref.taylor_forward(cast(X), [cast(W) for W in Ws], [cast(b) for b in bs],
                                           acts, first, second)
    dWs_dev = [dev(emu, W, dtype) for W in Ws]
    out = emu.taylor_forward(dev(emu, X, dtype), dWs_dev, [dev(emu, b, dtype) for b in bs], acts,
                             first, second)
    for got, want, what in zip(out[:3], (F, dF, d2F), ("F", "dF", "d2F")):
        assert_close(host(emu, got), want, dtype, what=what)
    for l in range(len(Ws) + 1):   # every saved stream, layer 0's seed included
        assert_close(host(emu, out[3].dAs[l]), saved.dAs[l], dtype, what=f"dAs[{l}]")
        assert_close(host(emu, out[3].d2As[l]), saved.d2As[l], dtype, what=f"d2As[{l}]")
    G, dG, d2G = (cast(rng.normal(size=x.shape)) for x in (F, dF, d2F))
    dWs, dbs = ref.taylor_backward(saved, [cast(W) for W in Ws], acts, G, dG, d2G)
    got_W, got_b = emu.taylor_backward(out[3], dWs_dev, acts, dev(emu, G, dtype),
                                       dev(emu, dG, dtype), dev(emu, d2G, dtype))
    for l in range(len(Ws)):
        assert_close(host(emu, got_W[l]), dWs[l], dtype, what=f"dWs[{l}]")
        assert_close(host(emu, got_b[l]), dbs[l], dtype, what=f"dbs[{l}]")
    # the stream gradients left out are zeros
    dWs0, _ = ref.taylor_backward(saved, [cast(W) for W in Ws], acts, G)
    got0, _ = emu.taylor_backward(out[3], dWs_dev, acts, dev(emu, G, dtype))
    for l in range(len(Ws)):
        assert_close(host(emu, got0[l]), dWs0[l], dtype, what=f"dWs[{l}] (dG, d2G None)")


def test_taylor_forward_streams_in_place_with_repeated_pairs(emu, rng):
    """The elementwise kernel alone: Ä'_q from the products Ḣ before they become Ȧ' (in place),
    a stream in several pairs and a pair of a stream with itself."""
    k1, n, p = 3, 7, 5
    A = np.tanh(rng.normal(size=(n, p)))
    dH, d2H = rng.normal(size=(k1, n, p)), rng.normal(size=(4, n, p))
    pairs = [(0, 1), (1, 0), (2, 2), (1, 2)]
    s1 = 1 - A * A
    s2 = -2 * A * s1
    want_d2 = np.stack([s2 * dH[a] * dH[c] + s1 * d2H[q] for q, (a, c) in enumerate(pairs)])
    dA, d2A = dev(emu, dH, "float64"), dev(emu, d2H, "float64")
    m = n * p
    emu._launch("taylor_forward_streams_f64", emu._grid_1d(m), (256, 1, 1),
                (dev(emu, A, "float64"), dA, d2A, fakecupy.asarray(np.array(pairs, np.int32)),
                 np.int64(m), np.int32(k1), np.int32(len(pairs)), np.int32(1)))
    assert_close(host(emu, dA), s1 * dH, "float64", what="dA")
    assert_close(host(emu, d2A), want_d2, "float64", what="d2A")


def test_taylor_kernels_take_saved_streams_of_any_layout(emu, rng):
    """_taylor_forward/_taylor_backward on a TaylorSaved whose stream arrays are not C-contiguous
    (n x k x p buffers seen as k x n x p): the same numbers as with the base's own layout."""
    from backprop.backends.base import TaylorSaved
    widths, acts, first, pairs = (3, 9, 2), ("tanh", "sigmoid"), (2, 0), ((0, 1), (1, 1))
    n = 13
    X = dev(emu, rng.normal(size=(n, 3)), "float64")
    Ws = [dev(emu, rng.normal(size=(a, b)), "float64") for a, b in zip(widths[:-1], widths[1:])]
    bs = [dev(emu, rng.normal(size=b), "float64") for b in widths[1:]]
    F, dF, d2F, saved = emu.taylor_forward(X, Ws, bs, acts, first, ((2, 0), (0, 0)))
    assert saved.second == pairs

    def strided(k, p):
        return emu.empty((n, k, p), "float64").transpose(1, 0, 2)
    odd = TaylorSaved([X] + [emu.empty((n, p), "float64") for p in widths[1:]],
                      [strided(2, p) for p in widths], [strided(2, p) for p in widths],
                      first, pairs)
    assert not odd.dAs[1].flags.c_contiguous
    emu._taylor_forward(Ws, bs, list(acts), odd)
    assert_close(host(emu, odd.As[2]), host(emu, F), "float64", what="F")
    for l in range(3):
        assert_close(host(emu, odd.dAs[l]), host(emu, saved.dAs[l]), "float64", what=f"dAs[{l}]")
        assert_close(host(emu, odd.d2As[l]), host(emu, saved.d2As[l]), "float64", what=f"d2As[{l}]")
    G, dG, d2G = (dev(emu, rng.normal(size=x.shape), "float64") for x in (F, dF, d2F))
    want_W, want_b = emu.taylor_backward(saved, Ws, acts, G, dG, d2G)
    got_W = [emu.empty(W.shape[::-1], "float64").T for W in Ws]   # non-contiguous outputs too
    got_b = [emu.empty((b.shape[0],), "float64") for b in bs]
    emu._taylor_backward(odd, Ws, list(acts), G, dG, d2G, got_W, got_b)
    for l in range(2):
        assert_close(host(emu, got_W[l]), host(emu, want_W[l]), "float64", what=f"dWs[{l}]")
        assert_close(host(emu, got_b[l]), host(emu, want_b[l]), "float64", what=f"dbs[{l}]")


def test_taylor_launch_counts(emu, rng):
    """Forward: the seed, then per layer the fused product, one product per stream kind, one
    elementwise launch. Backward per layer: two products (Ḣ, Ḧ), the elementwise launch, three
    products for dW (db fused), three for the layer below (not after the first layer)."""
    X = dev(emu, rng.normal(size=(6, 2)), "float64")
    Ws = [dev(emu, rng.normal(size=s), "float64") for s in ((2, 5), (5, 1))]
    bs = [dev(emu, rng.normal(size=s), "float64") for s in (5, 1)]
    before = emu.launches
    F, dF, d2F, saved = emu.taylor_forward(X, Ws, bs, ("tanh", "identity"), (0, 1), ((0, 1),))
    assert emu.launches - before == 1 + 2 * 4
    before = emu.launches
    emu.taylor_backward(saved, Ws, ("tanh", "identity"), F, dF, d2F)
    launches = emu.launches - before
    # the fake CuPy's host-to-device copy of the pairs is not a counted launch
    assert launches == 2 * (2 + 1 + 3) + 3


def test_launch_counts(emu, rng):
    A, W, b = (dev(emu, x, "float32") for x in (rng.normal(size=(9, 4)), rng.normal(size=(4, 3)),
                                                rng.normal(size=3)))
    G = dev(emu, rng.normal(size=(9, 3)), "float32")
    counts = {}
    for name, call in [("dense_forward", lambda: emu.dense_forward(A, W, b, "tanh")),
                       ("dense_backward", lambda: emu.dense_backward(G, A, W, "tanh")),
                       ("dense_backward (no G_prev)", lambda: emu.dense_backward(G, A, W, "tanh", need_G_prev=False)),
                       ("loss", lambda: emu.loss("mse", G, G)),
                       ("sgd_update", lambda: emu.sgd_update(W, G[:4], None, 0.1))]:
        before = emu.launches
        call()
        counts[name] = emu.launches - before
    # the loss: its kernel and the memset that resets the reductions' counter
    assert counts == {"dense_forward": 1, "dense_backward": 2, "dense_backward (no G_prev)": 1,
                      "loss": 2, "sgd_update": 1}


def test_one_program_compiled_once_per_backend(rng):
    before = fakecupy.RawModule.compiled
    bk = CudaBackend(cupy=fakecupy)
    for _ in range(3):
        bk.dense_forward(dev(bk, rng.normal(size=(3, 2)), "float64"),
                         dev(bk, rng.normal(size=(2, 2)), "float64"), dev(bk, np.zeros(2), "float64"), "relu")
        bk.loss("sse", bk.zeros((2, 2), "float32"), bk.zeros((2, 2), "float32"))
    assert fakecupy.RawModule.compiled - before == 1


def test_the_adapter_launches_exactly_the_programs_kernels():
    """The kernel names the adapter builds (program.launchable_kernels, from the tables its
    launches use) against the extern "C" kernels of the program as the compiler sees them
    (after the macros are expanded): none missing, none unused."""
    declared = set(emulator.kernel_names(sorted(sources_dir().glob("*.cu")), sources_dir()))
    launched = set(launchable_kernels())
    assert launched - declared == set(), "launched but not in cuda/*.cu"
    assert declared - launched == set(), "in cuda/*.cu but never launched by the adapter"


def test_every_launch_uses_a_listed_kernel(emu, rng, monkeypatch):
    """Whatever the adapter launches (the model end to end, eager and as a graph) is a name of
    launchable_kernels()."""
    seen = set()
    real = emu.launcher.launch
    monkeypatch.setattr(emu.launcher, "launch",
                        lambda name, *a: (seen.add(name), real(name, *a))[1])
    X, Y = regression(rng, n=12)
    for fused in (False, True):
        net = bp.MLP([2, 5, 1], backend=emu, dtype="float32", seed=0)
        net.fit(X, Y, epochs=2, batch_size=5, l1=1e-3, fused=fused)
    emu.colsum(dev(emu, rng.normal(size=(2000, 2)), "float64"))
    assert seen and seen <= set(launchable_kernels())
    assert {"train_batch_in_f32", "train_step_end_f32", "weight_penalty_f32"} <= seen


def test_program_is_the_sources_with_common_header_first():
    src = module_source()
    assert src.index("BP_ACT_TANH") < src.index("gemm_##CFG")
    assert '#include "common.cuh"' not in src


def test_bad_input_rejected_before_any_launch(emu, rng):
    A32 = dev(emu, rng.normal(size=(4, 3)), "float32")
    A64 = dev(emu, rng.normal(size=(4, 3)), "float64")
    W32 = dev(emu, rng.normal(size=(3, 2)), "float32")
    before = emu.launches
    with pytest.raises(TypeError, match="array of backend 'cuda'"):
        emu.gemm(rng.normal(size=(4, 3)), W32)
    with pytest.raises(TypeError, match="float32"):
        emu.gemm(A64, W32)
    with pytest.raises(TypeError, match="float32 or float64"):
        emu.colsum(dev(emu, np.ones((3, 2)), "int32"))
    with pytest.raises(ValueError, match="C-contiguous"):
        emu.gemm(A32.T, A32)
    with pytest.raises(ValueError, match="op\\(A\\) is 4x3 but op\\(B\\) is 4x3"):
        emu.gemm(A32, A32)
    with pytest.raises(ValueError, match="beta"):
        emu.gemm(A32, W32, beta=1.0)
    with pytest.raises(ValueError, match="shape \\(4, 2\\)"):
        emu.gemm(A32, W32, out=emu.zeros((2, 4), "float32"))
    buf = emu.zeros((24,), "float32")
    with pytest.raises(ValueError, match="overlaps"):  # out shares memory with A
        emu.gemm(buf[:12].reshape(4, 3), dev(emu, np.eye(3), "float32"), out=buf[8:20].reshape(4, 3))
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        emu.dense_forward(A32, W32, dev(emu, np.zeros(2), "float32"), "swish")
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        emu.dense_forward(A32, W32, dev(emu, np.zeros(3), "float32"), "tanh")
    with pytest.raises(ValueError, match="unknown loss"):
        emu.loss("hinge", A32, A32)
    with pytest.raises(ValueError, match="step counts from 1"):
        emu.adam_update(A32, *(emu.zeros((4, 3), "float32") for _ in range(3)), 0.1, 0.9, 0.99,
                        1e-8, 0)
    assert emu.launches == before


def test_int32_overflow_is_refused(emu):
    with pytest.raises(ValueError, match="32-bit"):
        emu._check_int32("gemm", k=2**31)


def test_kernel_errors_name_the_kernel(emu, rng):
    A = dev(emu, rng.normal(size=(4, 3)), "float32")
    with pytest.raises(CudaKernelError, match="gemm_S_nn_f32"):
        emu._launch("gemm_S_nn_f32", (1, 1, 1), (256, 1, 1), (A, A, A, 4, 3, 3))  # Python ints
    with pytest.raises(CudaKernelError, match="'no_such_kernel'"):
        emu._launch("no_such_kernel", (1, 1, 1), (1, 1, 1), ())
    with pytest.raises(CudaKernelError, match="activation_forward_f32.*block dimensions"):
        emu._launch("activation_forward_f32", (1, 1, 1), (2048, 1, 1),
                    (A, A, np.int64(A.size), np.int32(0)))


def test_emulator_catches_out_of_bounds_writes_and_divergent_barriers(emu):
    code = r'''
    extern "C" __global__ void write_past_end(float* x, int n) {
        x[threadIdx.x] = 1.0f;   // blockDim.x > n writes past the end (into the guard zone)
    }
    extern "C" __global__ void divergent_barrier(float* x) {
        if (threadIdx.x == 0) return;
        __syncthreads();
        x[threadIdx.x] = 2.0f;
    }
    '''
    module = fakecupy.RawModule(code=code)
    x = fakecupy.zeros((4,), np.float32)
    with pytest.raises(emulator.EmulationError, match="outside the buffer"):
        module.get_function("write_past_end")((1,), (8,), (x, np.int32(4)))
    with pytest.raises(emulator.EmulationError, match="divergent barrier"):
        module.get_function("divergent_barrier")((1,), (8,), (x,))
    with pytest.raises(emulator.EmulationError, match="argument 1 must be a numpy int32"):
        module.get_function("write_past_end")((1,), (4,), (x, np.int64(4)))


def test_fakecupy_is_strict_like_cupy(emu):
    x = emu.zeros((3,), "float32")
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x)
    with pytest.raises(TypeError):
        x + np.ones(3, np.float32)


# ---- the whole model on the emulated backend ------------------------------------------------------

def regression(rng, n=48):
    X = rng.uniform(-1, 1, size=(n, 2))
    return X, np.sin(2 * X[:, :1]) + X[:, 1:] ** 2


@pytest.mark.parametrize("activation,loss", [("tanh", "sse"), ("relu", "cross_entropy"),
                                             ("sigmoid", "bce"), ("leaky_relu", "mse"),
                                             ("identity", "mse")])
def test_gradcheck_on_emulated_backend(emu, rng, activation, loss):
    net = bp.MLP([3, 5, 4, 2], activation=activation, output_activation="identity",
                 backend=emu, dtype="float64", seed=3)
    X = rng.normal(size=(6, 3))
    Y = {"cross_entropy": rng.integers(0, 2, size=6), "bce": rng.random((6, 2))}.get(
        loss, rng.normal(size=(6, 2)))
    assert bp.gradcheck(net, X, Y, loss=loss) < 1e-6
    value, grads = net.loss_and_grad(X, Y, loss)
    ref_net = net.to("numpy")
    ref_value, ref_grads = ref_net.loss_and_grad(X, Y, loss)
    assert value == pytest.approx(ref_value, rel=1e-10)
    for g, r in zip(grads.weights + grads.biases + [grads.X],
                    ref_grads.weights + ref_grads.biases + [ref_grads.X]):
        assert_close(g, r, "float64")


@pytest.mark.parametrize("optimizer", ["adam", bp.optim.SGD(lr=0.05, momentum=0.9, nesterov=True)])
def test_fit_matches_numpy(emu, dtype, rng, optimizer):
    X, Y = regression(rng)
    curves = []
    for backend in ("numpy", emu):
        net = bp.MLP([2, 8, 8, 1], backend=backend, dtype=dtype, seed=0)
        curves.append(net.fit(X, Y, loss="mse", optimizer=optimizer, lr=1e-2, epochs=25,
                              batch_size=16, l2=1e-3, seed=1).loss)
    np.testing.assert_allclose(curves[1], curves[0], rtol=2e-3 if dtype == "float32" else 1e-9)


def test_fit_with_dropout_and_validation(emu, rng):
    X, Y = regression(rng)
    net = bp.MLP([2, 16, 16, 1], backend=emu, seed=0)
    history = net.fit(X, Y, epochs=30, batch_size=16, lr=1e-2, dropout=0.2, validation_data=(X, Y),
                      early_stopping=50, seed=0)
    assert history.loss[-1] < history.loss[0] and len(history.val_loss) == 30


def test_predict_device_in_device_out(emu, rng):
    X, Y = regression(rng, n=10)
    net = bp.MLP([2, 8, 1], backend=emu, dtype="float64", seed=0)
    net.fit(X, Y, epochs=3, standardize=True)
    F_host = net.predict(X)
    assert isinstance(F_host, np.ndarray)
    F_dev = net.predict(emu.asarray(X, np.float64))
    assert isinstance(F_dev, fakecupy.ndarray)
    np.testing.assert_allclose(F_dev.get(), F_host, rtol=1e-12)
    np.testing.assert_allclose(F_host, net.to("numpy").predict(X), rtol=1e-12)


# ---- CUDA graph replay of the training step ---------------------------------------------------

def test_graph_replay_launches_nothing_while_capturing(emu, rng):
    """Captured kernels run only at replay: the graph is a recording, not an execution."""
    x = dev(emu, np.ones((4, 4)), "float64")
    calls = []

    def fn():
        calls.append(1)
        emu.activation_forward(x, "tanh", out=x)

    before = emu.launches
    graph = emu.capture(fn)
    after_warmup = host(emu, x).copy()
    np.testing.assert_allclose(after_warmup, np.tanh(1.0))
    assert emu.launches - before == 1  # the warm-up ran; the recording launched nothing
    graph.launch()
    np.testing.assert_allclose(host(emu, x), np.tanh(np.tanh(1.0)))
    assert len(calls) == 2 and graph.kernels == 1 and emu.launches - before == 2


def test_capture_refuses_allocating_reductions(emu):
    x = dev(emu, np.ones((4, 4)), "float64")
    with pytest.raises(RuntimeError, match="graph mode"):
        emu.capture(lambda: emu.loss("mse", x, x, G=emu.zeros((4, 4), "float64")))
    assert not emu.launcher.capturing


def test_capture_uses_a_non_blocking_stream(emu):
    x = dev(emu, np.ones((4, 4)), "float64")
    graph = emu.capture(lambda: emu.activation_forward(x, "tanh", out=x))
    assert graph.stream.non_blocking


def test_capture_reports_the_error_that_stopped_it(emu, monkeypatch):
    """The body's error propagates even when ending the broken capture fails too."""
    x = dev(emu, np.ones((4, 4)), "float64")
    calls = []

    def body():
        calls.append(1)
        emu.activation_forward(x, "tanh", out=x)
        if len(calls) == 2:
            raise KeyError("the body's own error")

    def failing_end_capture(self):
        fakecupy.cuda._capturing = None
        raise RuntimeError("cudaErrorStreamCaptureInvalidated")

    monkeypatch.setattr(fakecupy._Stream, "end_capture", failing_end_capture)
    with pytest.raises(KeyError, match="the body's own error"):
        emu.capture(body)
    assert not emu.launcher.capturing and fakecupy.cuda._capturing is None
