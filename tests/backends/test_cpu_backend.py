"""The cpu backend: bad input and the aliasing rule at the raw module and the adapter, the fused
training step against the kernel-by-kernel path and numpy, Ctrl-C during a native epoch, and thread
control. (Whether numpy products in between stall a step is timed by benchmarks/cpu_stall.py.)"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import backprop as bp
from backprop.backends import ACTIVATIONS, LOSSES, why_unavailable
from ..conftest import OPTIMIZERS

pytestmark = pytest.mark.skipif(why_unavailable("cpu") is not None,
                                reason=str(why_unavailable("cpu")))

if why_unavailable("cpu") is None:
    from backprop import _cpu
    from backprop.backends.cpu_backend import CpuBackend


def f32(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ---- bad input at the raw module ------------------------------------------------------------

def test_raw_rejects_non_arrays_and_bad_dtypes():
    out = np.empty((2, 2), np.float32)
    with pytest.raises(TypeError, match="(?s)incompatible function arguments.*A: numpy.ndarray"):
        _cpu.gemm([[1.0, 2.0]], f32(2, 2), out)
    with pytest.raises(TypeError, match="A must be float32 or float64, got int64"):
        _cpu.gemm(np.ones((2, 2), np.int64), f32(2, 2), out)
    with pytest.raises(TypeError, match="float16"):
        _cpu.activation_forward(np.ones((2, 2), np.float16), "tanh", np.ones((2, 2), np.float16))
    with pytest.raises(TypeError, match="B has dtype float64 but the other arrays are float32"):
        _cpu.gemm(f32(2, 2), np.ones((2, 2)), out)
    with pytest.raises(TypeError, match="out has dtype float64"):
        _cpu.dense_forward(f32(2, 3), f32(3, 2), f32(2), "tanh", np.empty((2, 2)))


def test_raw_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"gemm: op\(A\) is 2x3 but op\(B\) is 2x2"):
        _cpu.gemm(f32(2, 3), f32(2, 2), np.empty((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"out has shape \(2, 3\); axis 1 must be 2"):
        _cpu.gemm(f32(2, 3), f32(3, 2), np.empty((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"b has shape \(3,\); axis 0 must be 2"):
        _cpu.dense_forward(f32(4, 3), f32(3, 2), f32(3), "tanh", np.empty((4, 2), np.float32))
    with pytest.raises(ValueError, match="A must be 2-D"):
        _cpu.dense_forward(f32(4), f32(3, 2), f32(2), "tanh", np.empty((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"A_prev has shape \(5, 3\); axis 0 must be 4"):
        _cpu.dense_backward(f32(4, 2), f32(5, 3), f32(3, 2), "tanh", np.empty((3, 2), np.float32),
                            np.empty(2, np.float32), np.empty((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"Y has shape \(3, 2\); axis 0 must be 4"):
        _cpu.loss("mse", f32(4, 2), f32(3, 2), np.empty((4, 2), np.float32))
    with pytest.raises(ValueError, match="out has shape"):
        _cpu.activation_forward(f32(4, 2), "tanh", np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="grad has shape"):
        _cpu.sgd_update(f32(3), f32(4), None, 0.1, 0.0, False)


def test_raw_rejects_zero_size_non_contiguous_read_only_and_overlap():
    with pytest.raises(ValueError, match="A is empty"):
        _cpu.gemm(np.empty((0, 3), np.float32), f32(3, 2), np.empty((0, 2), np.float32))
    with pytest.raises(ValueError, match="H is empty"):
        _cpu.activation_forward(np.empty((0,), np.float32), "relu", np.empty((0,), np.float32))
    A = f32(6, 6)
    with pytest.raises(ValueError, match="A must be C-contiguous"):
        _cpu.gemm(A[:, ::2], f32(3, 2), np.empty((6, 2), np.float32))
    with pytest.raises(ValueError, match="A must be C-contiguous"):
        _cpu.gemm(np.asfortranarray(f32(3, 3)), f32(3, 2), np.empty((3, 2), np.float32))
    out = np.empty((6, 2), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        _cpu.gemm(A, f32(6, 2), out)
    C = f32(6, 6)
    with pytest.raises(ValueError, match="out overlaps A"):
        _cpu.gemm(C, f32(6, 6), C)
    with pytest.raises(ValueError, match="out overlaps A"):
        _cpu.dense_forward(C, f32(6, 6), f32(6), "tanh", C)
    with pytest.raises(ValueError, match="out overlaps H"):  # partial overlap, not in place
        _cpu.activation_forward(C.ravel()[:30], "tanh", C.ravel()[6:36])
    _cpu.activation_forward(C, "tanh", C)  # exactly in place is fine for elementwise kernels


def test_raw_aliasing_rule_in_place_into_the_first_input_only():
    """An elementwise kernel may write into its first input; no other output may overlap an input."""
    D, A = f32(4, 5, seed=1), np.tanh(f32(4, 5, seed=2))
    expected = _cpu.activation_backward(D, A, "tanh", np.empty_like(D))
    assert np.array_equal(_cpu.activation_backward(D, A, "tanh", D), expected)
    with pytest.raises(ValueError, match="out overlaps A"):
        _cpu.activation_backward(f32(4, 5), A, "tanh", A)
    M = np.full((4, 5), 2.0, np.float32)
    B = f32(4, 5, seed=3)
    assert np.array_equal(_cpu.dropout(B, M, B), 2 * f32(4, 5, seed=3))
    with pytest.raises(ValueError, match="out overlaps M"):
        _cpu.dropout(f32(4, 5), M, M)
    F = f32(4, 5)
    with pytest.raises(ValueError, match="G overlaps F"):
        _cpu.loss("sse", F, f32(4, 5, seed=4), F)
    with pytest.raises(ValueError, match="G overlaps Y"):
        Y = f32(4, 5, seed=4)
        _cpu.loss("mse", F, Y, Y)


def test_raw_rejects_unknown_names_and_bad_scalars():
    A = f32(3, 3)
    with pytest.raises(ValueError, match="unknown activation 'softplus'"):
        _cpu.activation_forward(A, "softplus", np.empty_like(A))
    with pytest.raises(TypeError, match="activation must be a str"):
        _cpu.activation_forward(A, 3, np.empty_like(A))
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        _cpu.loss("hinge", A, A.copy(), np.empty_like(A))
    with pytest.raises(ValueError, match="adam step counts from 1"):
        _cpu.adam_update(A, A.copy(), A.copy(), A.copy(), 0.1, 0.9, 0.999, 1e-8, 0)
    with pytest.raises(ValueError, match="number of threads must be >= 1"):
        _cpu.set_num_threads(0)


def test_raw_nan_propagates_without_error():
    """NaN is IEEE arithmetic here (the frontend rejects non-finite data before training)."""
    H = np.array([[np.nan, 1.0]], np.float32)
    out = _cpu.activation_forward(H, "tanh", np.empty_like(H))
    assert np.isnan(out[0, 0]) and np.isfinite(out[0, 1])
    G = np.empty_like(H)
    assert np.isnan(_cpu.loss("mse", H, np.zeros_like(H), G))


def test_adapter_checks_before_native_code():
    bk = CpuBackend()
    with pytest.raises(TypeError, match="cpu gemm: A must be an array of backend 'cpu'"):
        bk.gemm([[1.0]], np.ones((1, 1), np.float32))
    with pytest.raises(ValueError, match="needs out"):
        bk.gemm(f32(2, 2), f32(2, 2), beta=1.0)
    with pytest.raises(ValueError, match="A must be C-contiguous"):
        bk.dense_forward(f32(4, 6)[:, ::2], f32(3, 2), f32(2), "tanh")
    with pytest.raises(TypeError, match="int32"):
        bk.colsum(np.ones((3, 3), np.int32))
    X = bk.asarray(np.arange(6.0).reshape(2, 3)[:, ::-1], np.float32)  # the documented conversion
    assert X.flags.c_contiguous and X.dtype == np.float32


def test_trainer_rejects_bad_buffers():
    W, b = [f32(3, 4), f32(4, 2)], [f32(4), f32(2)]
    dW, db = [np.empty_like(w) for w in W], [np.empty_like(x) for x in b]
    acts = ["tanh", "identity"]
    with pytest.raises(ValueError, match="one entry per layer"):
        _cpu.Trainer32(W, b[:1], dW, db, acts, "mse", "sgd", [], [], 0.1)
    with pytest.raises(ValueError, match="W\\[1\\] has 3 rows but layer 0 has 4 outputs"):
        _cpu.Trainer32([W[0], f32(3, 2)], b, dW, db, acts, "mse", "sgd", [], [], 0.1)
    with pytest.raises(ValueError, match="dW\\[0\\] overlaps W\\[0\\]"):
        _cpu.Trainer32(W, b, [W[0], dW[1]], db, acts, "mse", "sgd", [], [], 0.1)
    with pytest.raises(ValueError, match="needs 4 \\+ 0 state arrays"):
        _cpu.Trainer32(W, b, dW, db, acts, "mse", "momentum", [], [], 0.1)
    with pytest.raises(ValueError, match="unknown optimizer"):
        _cpu.Trainer32(W, b, dW, db, acts, "mse", "rmsprop", [], [], 0.1)
    with pytest.raises(TypeError, match="b\\[0\\] has dtype float64"):
        _cpu.Trainer32(W, [b[0].astype(np.float64), b[1]], dW, db, acts, "mse", "sgd", [], [], 0.1)
    tr = _cpu.Trainer32(W, b, dW, db, acts, "mse", "sgd", [], [], 0.1)
    with pytest.raises(ValueError, match=r"X has shape \(5, 2\); axis 1 must be 3"):
        tr.step(f32(5, 2), f32(5, 2), 0.1, 0)
    with pytest.raises(ValueError, match=r"Y has shape \(4, 2\); axis 0 must be 5"):
        tr.step(f32(5, 3), f32(4, 2), 0.1, 0)
    with pytest.raises(ValueError, match=r"order\[1\] = 7 is out of range for 5 samples"):
        tr.epoch(f32(5, 3), f32(5, 2), 2, np.array([0, 7, 1, 2, 3]), 0.1, 0)
    with pytest.raises(TypeError, match="order must be an int64 array"):
        tr.epoch(f32(5, 3), f32(5, 2), 2, np.arange(5, dtype=np.int32), 0.1, 0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        tr.epoch(f32(5, 3), f32(5, 2), 0, None, 0.1, 0)
    with pytest.raises(ValueError, match="t counts the updates already applied"):
        tr.step(f32(5, 3), f32(5, 2), 0.1, -1)
    with pytest.raises(ValueError, match=r"X overlaps W\[0\], which the trainer writes"):
        tr.step(W[0].ravel()[:9].reshape(3, 3), f32(3, 2), 0.1, 0)  # read while W[0] is updated
    with pytest.raises(ValueError, match=r"Y overlaps dW\[1\]"):
        tr.epoch(f32(4, 3), dW[1], 2, None, 0.1, 0)
    del W, b  # the trainer keeps its buffers alive
    assert np.isfinite(tr.step(f32(5, 3), f32(5, 2), 0.1, 0))


def test_trainer_epoch_with_order_matches_gathered_batches():
    """epoch(order) gathers the rows natively; the same as stepping over X[order] in Python."""
    def make():
        W, b = [f32(3, 5, seed=1), f32(5, 2, seed=2)], [f32(5, seed=3), f32(2, seed=4)]
        return W, b, [np.empty_like(w) for w in W], [np.empty_like(x) for x in b]
    X, Y = f32(11, 3, seed=5), f32(11, 2, seed=6)
    order = np.random.default_rng(0).permutation(11)
    W1, b1, dW1, db1 = make()
    losses = _cpu.Trainer32(W1, b1, dW1, db1, ["tanh", "identity"], "mse", "sgd", [], [],
                            0.1).epoch(X, Y, 4, order, 0.1, 0)
    W2, b2, dW2, db2 = make()
    tr = _cpu.Trainer32(W2, b2, dW2, db2, ["tanh", "identity"], "mse", "sgd", [], [], 0.1)
    Xo, Yo = X[order], Y[order]
    expected = [tr.step(Xo[s:s + 4], Yo[s:s + 4], 0.1, 0) for s in range(0, 11, 4)]
    np.testing.assert_allclose(losses, expected, rtol=1e-6)
    for a, c in zip(W1 + b1, W2 + b2):
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-7)


# ---- the fused step against the kernel path and numpy -----------------------------------------

def data_for(loss, n=37, p=3, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    if loss == "cross_entropy":
        return X, rng.integers(0, k, size=n)
    if loss == "bce":
        return X, (rng.random((n, k)) < 0.5).astype(float)
    return X, rng.normal(size=(n, k))


def train(backend, dtype, activation, loss, opt, fused, epochs=12, l1=0.0, l2=0.0, layers=(3, 17, 10, 4),
          output_activation="identity", batch_size="auto"):
    X, Y = data_for(loss, p=layers[0], k=layers[-1])
    net = bp.MLP(list(layers), activation=activation, output_activation=output_activation,
                 backend=backend, dtype=dtype, seed=3)
    if batch_size == "auto":
        batch_size = None if opt == "gd" else 8
    history = net.fit(X, Y, loss=loss, optimizer=OPTIMIZERS[opt](), epochs=epochs,
                      batch_size=batch_size, l1=l1, l2=l2, seed=1, fused=fused)
    return history.loss, net.weights + net.biases


def assert_same(a, b, rtol, what):
    (loss_a, params_a), (loss_b, params_b) = a, b
    np.testing.assert_allclose(loss_a, loss_b, rtol=rtol, err_msg=f"{what}: loss curve")
    for x, y in zip(params_a, params_b):
        scale = max(float(np.max(np.abs(y))), 1e-30)
        assert float(np.max(np.abs(x - y))) / scale <= rtol, f"{what}: parameters differ"


def assert_same_bits(fused, kernels, what):
    """The fused step calls the kernels the kernel path calls, in its order: the same parameters,
    bit for bit. The step's loss is the data loss plus one penalty term per layer, which the two
    paths may add in another order (1e-16 of the loss); without a penalty it is the same bits."""
    (loss_a, params_a), (loss_b, params_b) = fused, kernels
    for x, y in zip(params_a, params_b):
        assert x.tobytes() == y.tobytes(), f"{what}: parameters differ"
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-15, atol=0, err_msg=f"{what}: loss curve")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_fused_equals_kernel_path_every_activation_and_loss(activation, loss):
    fused = train("cpu", "float64", activation, loss, "adam", fused=True, l2=1e-3)
    kernels = train("cpu", "float64", activation, loss, "adam", fused=False, l2=1e-3)
    assert_same_bits(fused, kernels, f"{activation}/{loss} fused vs kernels")
    reference = train("numpy", "float64", activation, loss, "adam", fused=None, l2=1e-3)
    assert_same(fused, reference, 1e-10, f"{activation}/{loss} fused vs numpy")


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_equals_kernel_path_every_optimizer(opt, dtype):
    fused = train("cpu", dtype, "tanh", "mse", opt, fused=True, l1=1e-3, l2=1e-2)
    kernels = train("cpu", dtype, "tanh", "mse", opt, fused=False, l1=1e-3, l2=1e-2)
    assert_same_bits(fused, kernels, f"{opt}/{dtype} fused vs kernels")
    fused = train("cpu", dtype, "sigmoid", "bce", opt, fused=True)
    kernels = train("cpu", dtype, "sigmoid", "bce", opt, fused=False)
    assert fused[0] == kernels[0], f"{opt}/{dtype}: loss curves differ without a penalty"


def test_fused_output_activation_and_wide_layers():
    """A sigmoid output layer, and layers past the narrow kernels (Eigen and OpenBLAS products)."""
    layers = (20, 300, 40, 3)
    fused = train("cpu", "float64", "relu", "bce", "sgd", True, epochs=3, layers=layers,
                  output_activation="sigmoid")
    kernels = train("cpu", "float64", "relu", "bce", "sgd", False, epochs=3, layers=layers,
                    output_activation="sigmoid")
    assert_same_bits(fused, kernels, "wide fused vs kernels")


def test_few_hundred_steps_same_loss_curve_as_numpy():
    """Raissi's network: 300 full-batch Adam steps; the loss curves of cpu and numpy, in float64
    against each other and in float32 against the float64 curve.

    The bounds follow from how this trajectory amplifies rounding. Two float64 computations that
    differ only in the order of their sums (numpy or cpu on the rows permuted) agree to 5e-16 for
    the first 50 steps and drift apart to at most 1e-10 by step 300: an amplification of about
    2.5e5 that belongs to the trajectory, not to a backend (Adam divides each gradient component
    by its own running scale, so components near zero change direction on a rounding difference).
    So, with a per-step agreement of ~20 unit roundoffs (u = 1.1e-16 and 6e-8):
      float64, cpu vs numpy: 1e-14 for 50 steps (measured 2e-16), x 2.5e5 -> 2.5e-9 over 300
          (measured 9e-12; row permutations of either backend reach 1e-10);
      float32 vs float64: 1e-6 for 50 steps (measured 1.5e-7 numpy, 8e-8 cpu), x 2.5e5 -> 0.25
          over 300 (measured 0.031 numpy, 0.047 cpu; numpy on permuted rows 0.004 to 0.086).
    Both backends give the same bits on every run, so these numbers do not vary between runs.
    """
    X = np.linspace(-1, 1, 100).reshape(-1, 1)
    Y = X * np.sin(4 * np.pi * X)
    curves = {}
    for backend in ("numpy", "cpu"):
        for dtype in ("float64", "float32"):
            net = bp.MLP([1] + [10] * 10 + [1], backend=backend, dtype=dtype, seed=0)
            curves[backend, dtype] = np.asarray(net.fit(X, Y, loss="sse", optimizer="adam", lr=1e-3,
                                                        epochs=300).loss)
    truth = curves["numpy", "float64"]

    def drift(curve, steps=300):
        return float(np.max(np.abs(curve[:steps] - truth[:steps]) / truth[:steps]))

    amplification = 2.5e5
    assert drift(curves["cpu", "float64"], 50) < 1e-14
    assert drift(curves["cpu", "float64"]) < 1e-14 * amplification
    for backend in ("numpy", "cpu"):
        assert drift(curves[backend, "float32"], 50) < 1e-6, backend
        assert drift(curves[backend, "float32"]) < 1e-6 * amplification, backend
    assert curves["cpu", "float64"][-1] < 0.5 * curves["cpu", "float64"][0]


def test_fused_is_the_default_and_dropout_uses_the_kernel_path():
    net = bp.MLP([3, 5, 2], backend="cpu", seed=0)
    assert bp.Trainer(net, "mse", "sgd").fused
    assert not bp.Trainer(net, "mse", "sgd", fused=False).fused
    assert not bp.Trainer(net, "mse", "sgd", dropout=0.5).fused
    with pytest.raises(ValueError, match="no dropout"):
        bp.Trainer(net, "mse", "sgd", dropout=0.5, fused=True)
    with pytest.raises(ValueError, match="no fused training step"):
        bp.Trainer(bp.MLP([3, 5, 2], backend="numpy"), "mse", "sgd", fused=True)


def test_fused_adam_step_count_and_lr_schedule_follow_the_optimizer():
    X, Y = data_for("mse", k=2)
    results = []
    for fused in (True, False):
        net = bp.MLP([3, 6, 2], backend="cpu", dtype="float64", seed=0)
        h = net.fit(X, Y, loss="mse", optimizer="adam", epochs=5, batch_size=10, fused=fused,
                    lr_schedule=lambda e: 1e-2 / (1 + e), seed=2)
        results.append((h.loss, net.weights + net.biases))
    assert_same_bits(results[0], results[1], "adam with schedule")


def test_make_trainer_knows_the_optimizer_by_its_name():
    """GD, SGD and Adam run fused; AdamW (an Adam whose decay runs outside the Adam kernel) and
    any other optimizer are refused before anything is built."""
    net = bp.MLP([3, 5, 2], backend="cpu", seed=0)
    with pytest.raises(ValueError, match="not AdamW"):
        net.backend.make_trainer(net, "mse", bp.optim.AdamW(), None)
    with pytest.raises(ValueError, match="not object"):
        net.backend.make_trainer(net, "mse", object(), None)
    assert not bp.Trainer(net, "mse", bp.optim.AdamW()).fused


# ---- Ctrl-C during a native epoch ----------------------------------------------------------------

INTERRUPTED_EPOCH = textwrap.dedent("""
    import sys, time
    import numpy as np
    from backprop.backends.cpu_backend import _cpu
    rng = np.random.default_rng(0)
    layers, batch, batches = [64, 2048, 2048, 10], 64, 400   # tens of ms a batch: seconds an epoch
    X = rng.normal(size=(batch * batches, 64)).astype(np.float32)
    Y = rng.normal(size=(batch * batches, 10)).astype(np.float32)
    W0 = [(rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32) for a, b in zip(layers, layers[1:])]

    def trainer():
        W, b = [w.copy() for w in W0], [np.zeros(w.shape[1], np.float32) for w in W0]
        dW, db = [np.empty_like(w) for w in W], [np.empty_like(x) for x in b]
        state = [[np.zeros_like(x) for pair in zip(W, b) for x in pair] for _ in range(2)]  # W0, b0, W1, ...
        return W + b, _cpu.Trainer32(W, b, dW, db, ["tanh", "tanh", "identity"], "mse", "adam", *state,
                                     lr=1e-3)

    params, tr = trainer()
    print("started", flush=True)
    try:
        tr.epoch(X, Y, batch, None, 1e-3, 0)
        sys.exit("the epoch ran to its end")
    except KeyboardInterrupt as exc:
        stopped, updates, losses = time.monotonic(), exc.updates, exc.losses
    assert len(losses) == updates and np.isfinite(losses).all()
    assert all(np.isfinite(p).all() for p in params)
    replay, tr2 = trainer()
    for i in range(updates):  # the same batches stepped one by one: the same bits
        tr2.step(X[i * batch:(i + 1) * batch], Y[i * batch:(i + 1) * batch], 1e-3, i)
    same = all(np.array_equal(p, q) for p, q in zip(params, replay))
    print(stopped, updates, batches, same, flush=True)
""")


def test_ctrl_c_stops_a_native_epoch_after_whole_batches():
    """SIGINT during a long fused epoch: the epoch stops after the batch in progress and raises
    KeyboardInterrupt (carrying the batches' losses and the number of updates applied); the
    parameters are those of that many whole batches. A generous bound: it stops at all, promptly."""
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED_EPOCH], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        time.sleep(0.5)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 0, err
    stopped, updates, batches, same = out.split()
    assert float(stopped) - sent < 1.0, f"stopped {float(stopped) - sent:.2f} s after SIGINT"
    assert 0 < int(updates) < int(batches)
    assert same == "True", "the parameters are not those of a whole number of batches"


# ---- threads -------------------------------------------------------------------------------------

def test_set_num_threads():
    before = bp.get_num_threads()
    try:
        bp.set_num_threads(1)
        assert bp.get_num_threads() == 1
        bp.set_num_threads(2)
        assert bp.get_num_threads() == 2
    finally:
        bp.set_num_threads(before)
    with pytest.raises(ValueError):
        bp.set_num_threads(0)


def test_omp_num_threads_is_followed():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("OPENBLAS_NUM_THREADS", None)
    code = "import backprop as bp; bp.get_backend('cpu'); print(bp.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "1"


def test_products_share_numpys_thread_pool():
    """With numpy's own OpenBLAS doing the large products there is one pool of BLAS threads."""
    from backprop.backends import cpu_backend
    numpy_blas = cpu_backend._numpy_openblas()
    if numpy_blas is None:
        pytest.skip("this numpy does not bundle OpenBLAS")
    assert cpu_backend.BLAS_PATH == numpy_blas[0]
