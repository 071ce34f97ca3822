"""Data-parallel training over MPI (backprop.distributed), under ``mpiexec -n 2`` from here.

Every distributed scenario must give, on each rank, the parameters of one process training on
the global data (float64, relative 1e-12), bit for bit the same on both ranks; with
reduction="fixed", bit for bit the parameters of one process with the same grad_blocks.
"""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from .scenarios import EMULATED, SCENARIOS, run

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "mpi_worker.py")


def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None, "mpi4py is not installed (pip install '.[mpi]')"
    exe = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    exe = exe if os.path.exists(exe) else shutil.which("mpiexec")
    if exe is None:
        return None, "no mpiexec on PATH (pip install '.[mpi]' brings mpich's)"
    return exe, None


def _env():
    import backprop
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    # the worker imports the same backprop as this process (an installed one or python/)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(backprop.__file__)), ROOT, env.get("PYTHONPATH", "")])
    return env


_STARTS = {}


def _mpi_starts(exe):
    """None if 2 ranks start and meet in a barrier, else why not (checked once)."""
    if exe not in _STARTS:
        code = "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"
        try:
            proc = subprocess.run([exe, "-n", "2", sys.executable, "-c", code],
                                  capture_output=True, text=True, timeout=60, env=_env())
            _STARTS[exe] = (None if proc.returncode == 0 else
                            f"MPI cannot start here: {(proc.stderr or proc.stdout)[-300:]}")
        except subprocess.TimeoutExpired:
            _STARTS[exe] = "MPI cannot start here: mpiexec -n 2 timed out"
    return _STARTS[exe]


def mpiexec_or_skip():
    """The mpiexec to use; the test is skipped, with the reason, when MPI cannot start here."""
    exe, why = _mpiexec()
    if exe is None:
        pytest.skip(why)
    why = _mpi_starts(exe)
    if why is not None:
        pytest.skip(why)
    return exe


def mpirun(tmp, mode, n=2, timeout=120, args=(), env=None):
    exe = mpiexec_or_skip()
    start = time.monotonic()
    proc = subprocess.run([exe, "-n", str(n), sys.executable, WORKER, str(tmp), mode, *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(_env(), **(env or {})))
    return proc, time.monotonic() - start


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mpi")
    proc, _ = mpirun(tmp, "scenarios")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [np.load(tmp / f"rank{r}.npz") for r in range(2)]


def _params(saved, name):
    return [saved[k] for k in sorted(saved.files) if k.startswith(name + "/") and
            k.split("/")[1][0] in "Wb"]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_ranks_equal_one_process(ranks, name):
    if SCENARIOS[name].get("backend") == "cpu":
        from backprop.backends import why_unavailable
        if why_unavailable("cpu"):
            pytest.skip(why_unavailable("cpu"))
    r0, r1 = ranks
    for a, b in zip(_params(r0, name), _params(r1, name)):
        assert np.array_equal(a, b), "ranks hold different parameters"
    for key in ("loss", "val_loss", "stopped"):
        assert np.array_equal(r0[f"{name}/{key}"], r1[f"{name}/{key}"])
    # one process on the whole data: the kernel path (the distributed step's), or with the same
    # grad_blocks for reduction="fixed"
    fixed = SCENARIOS[name].get("reduction") == "fixed"
    net, history = run(name) if fixed else run(name, fused=False)
    ref = [x for W, b in zip(net.weights, net.biases) for x in (W, b)]
    got = [r0[f"{name}/{p}{l}"] for l in range(len(net.weights)) for p in "Wb"]
    for g, r in zip(got, ref):
        if fixed:
            assert np.array_equal(g, r), "reduction='fixed' must be bit-identical"
        else:
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12 * np.abs(r).max())
    np.testing.assert_allclose(r0[f"{name}/loss"], history.loss, rtol=1e-12)
    if history.val_loss:
        np.testing.assert_allclose(r0[f"{name}/val_loss"], history.val_loss, rtol=1e-12)
    stopped = -1 if history.stopped_epoch is None else history.stopped_epoch
    assert int(r0[f"{name}/stopped"]) == stopped
    if name == "early_stopping":
        assert stopped > 0, "the scenario must stop early"


def test_trainer_with_comm(ranks):
    """Trainer.epoch / Trainer.step on each rank's rows: the single-process Trainer's steps
    (parameters from rank 0, whose seed is the single process's)."""
    from .scenarios import run_trainer
    r0, r1 = ranks
    for a, b in zip(_params(r0, "trainer"), _params(r1, "trainer")):
        assert np.array_equal(a, b)
    net = run_trainer()
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        np.testing.assert_allclose(r0[f"trainer/W{l}"], W, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(r0[f"trainer/b{l}"], b, rtol=1e-12, atol=1e-13)


def test_fixed_blocks_independent_of_rank_count():
    """grad_blocks=B on one process is B blocks whatever the ranks; B=1 is the plain fit."""
    a, _ = run("adam", reduction="fixed", grad_blocks=1)
    b, _ = run("adam", fused=False)
    assert all(np.array_equal(x, y) for x, y in zip(a.weights + a.biases, b.weights + b.biases))
    c, _ = run("adam", reduction="fixed", grad_blocks=4)
    np.testing.assert_allclose(c.weights[0], b.weights[0], rtol=1e-12, atol=1e-14)


def test_a_rank_that_raises_stops_every_rank(tmp_path):
    # a hang would run to the timeout; the bound is generous for a loaded CI machine (a normal
    # run takes well under a second here)
    proc, seconds = mpirun(tmp_path, "raise", timeout=120)
    assert proc.returncode != 0
    assert "rank 1 fails on purpose in epoch 2" in proc.stderr
    assert "rank 1 of 2 failed in distributed fit" in proc.stderr
    assert "fit returned" not in proc.stdout
    assert seconds < 60


def test_an_uncaught_exception_in_a_trainer_loop_stops_every_rank(tmp_path):
    proc, seconds = mpirun(tmp_path, "trainer_raise", timeout=120)
    assert proc.returncode != 0
    assert "rank 1 fails on purpose in its own loop" in proc.stderr
    assert "rank 1 of 2 failed in distributed training" in proc.stderr
    assert "loop finished" not in proc.stdout
    assert seconds < 60


def test_shard_take_refuses_ranks_with_different_values(tmp_path):
    proc, _ = mpirun(tmp_path, "take_data", timeout=120)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank} raised DistributedError" in proc.stdout, proc.stdout + proc.stderr
    assert "rank 1 holds other values than rank 0" in proc.stdout
    assert "fit returned" not in proc.stdout


def test_bad_input_on_one_rank_fails_every_rank(tmp_path):
    proc, seconds = mpirun(tmp_path, "bad_input", timeout=120)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank} raised" in proc.stdout, proc.stdout + proc.stderr
    # rank 0 names the rank that failed and why; rank 1 raises its own error
    assert "rank 0 raised DistributedError" in proc.stdout
    assert "rank 1: ValueError: Y has 2 columns" in proc.stdout
    assert "rank 1 raised ValueError: Y has 2 columns" in proc.stdout
    assert seconds < 60


@pytest.mark.parametrize("transport", ["host", "nccl"])
def test_cuda_backend_under_the_emulator(tmp_path, transport):
    """The cuda backend's kernels (CPU emulator, tests/cuda_emu) on 2 ranks: the CuPy-array
    path of backprop.distributed with the host-staged transport, and with the NCCL path over
    an MPI stand-in for cupy.cuda.nccl (tests/distributed/fakenccl.py; no GPU here)."""
    import shutil as _shutil
    if _shutil.which("g++") is None:
        pytest.skip("the cuda emulator needs g++")
    names = list(EMULATED)
    env = {"BACKPROP_TEST_CUDA_EMULATOR": "1"}
    if transport == "nccl":
        env["BACKPROP_TEST_FAKE_NCCL"] = "1"
    proc, _ = mpirun(tmp_path, "scenarios", args=[",".join(names)], timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if transport == "nccl":  # the "sum" scenario's steps went through NCCL's allReduce
        steps = 3 * -(-53 // 8)
        for rank in (0, 1):
            assert f"rank {rank}: nccl allReduce calls: {steps}" in proc.stdout, proc.stdout
    r0, r1 = (np.load(tmp_path / f"rank{r}.npz") for r in range(2))
    for name in names:
        for a, b in zip(_params(r0, name), _params(r1, name)):
            assert np.array_equal(a, b)
        # the same run on numpy (the reference backend), one process
        options = {} if EMULATED[name].get("reduction") == "fixed" else {"fused": False}
        net, _ = run(name, backend="numpy", **options)
        got = [r0[f"{name}/{p}{l}"] for l in range(len(net.weights)) for p in "Wb"]
        ref = [x for W, b in zip(net.weights, net.biases) for x in (W, b)]
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


def test_bench_distributed_runs_on_two_ranks():
    exe = mpiexec_or_skip()
    proc = subprocess.run([exe, "-n", "2", sys.executable, "-m", "backprop", "bench",
                           "--distributed", "--quick", "--configs", "small", "--repeat", "1"],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "small  ranks=2" in proc.stdout and "predicted P=512" in proc.stdout
    assert proc.stdout.count("ranks=2") == 1  # printed by rank 0 only


def test_fixed_reduction_on_three_ranks(tmp_path):
    """reduction='fixed' with 4 blocks on 3 ranks (1, 1 and 2 blocks each): the bits of one
    process with grad_blocks=4, as on 2 ranks."""
    proc, _ = mpirun(tmp_path, "scenarios", n=3, args=["fixed"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = [np.load(tmp_path / f"rank{r}.npz") for r in range(3)]
    net, _ = run("fixed")
    ref = [x for W, b in zip(net.weights, net.biases) for x in (W, b)]
    for s in saved:
        got = [s[f"fixed/{p}{l}"] for l in range(len(net.weights)) for p in "Wb"]
        assert all(np.array_equal(g, r) for g, r in zip(got, ref))


def test_fixed_shards_must_hold_whole_blocks(tmp_path):
    proc, _ = mpirun(tmp_path, "misaligned", timeout=120)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert (f"rank {rank} raised DistributedError: reduction='fixed': rank 0 holds global "
                "rows [0, 3) but must hold the whole blocks 0..0, rows [0, 5)") in proc.stdout, \
            proc.stdout + proc.stderr


# ---- the scikit-learn estimators with comm ----------------------------------------------------

@pytest.fixture(scope="module")
def estimator_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mpi_estimators")
    proc, _ = mpirun(tmp, "estimators")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [np.load(tmp / f"rank{r}.npz") for r in range(2)]


def _estimator_scenarios():
    from .scenarios import ESTIMATORS
    return list(ESTIMATORS)


@pytest.mark.parametrize("name", _estimator_scenarios())
def test_estimator_two_ranks_equal_one_process(estimator_ranks, name):
    """MLPRegressor/MLPClassifier(comm=...) on 2 ranks: bit for bit the same on both ranks
    (coefs_, intercepts_, loss_curve_, n_iter_, validation_scores_, classes_), and the fit of
    one process on the same data. Tolerance: the ranks sum each batch's gradient in two parts,
    a different rounding order than one process's single product (~1e-16 relative per step),
    which the training dynamics carry over the steps (1e-14 measured after 25 sgd epochs or 15
    lbfgs iterations); rtol 1e-10 keeps a wide margin, while a wrongly weighted rank (e.g.
    n_r/N instead of its share of the batch's weight) is off by about 1e-2."""
    from .scenarios import ESTIMATORS, run_estimator
    r0, r1 = estimator_ranks
    keys = [k for k in r0.files if k.startswith(name + "/")]
    assert keys
    for key in keys:
        assert np.array_equal(r0[key], r1[key]), f"ranks differ in {key}"
    if ESTIMATORS[name].get("random_state", 0) is None:
        return  # rank 0's seed: only the agreement of the ranks is checked
    est = run_estimator(name)
    ref = [x for W, b in zip(est.coefs_, est.intercepts_) for x in (W, b)]
    got = [r0[f"{name}/{p}{l}"] for l in range(len(est.coefs_)) for p in "Wb"]
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10 * np.abs(r).max())
    assert int(r0[f"{name}/n_iter"]) == est.n_iter_
    np.testing.assert_allclose(r0[f"{name}/loss_curve"], est.loss_curve_, rtol=1e-10)
    if est.validation_scores_:
        np.testing.assert_allclose(r0[f"{name}/validation_scores"], est.validation_scores_,
                                   rtol=1e-10)
    if hasattr(est, "classes_"):
        assert list(r0[f"{name}/classes"]) == list(est.classes_)
    if name == "reg_sgd_early":
        assert est.n_iter_ < ESTIMATORS[name]["max_iter"], "the scenario must stop early"


@pytest.mark.parametrize("mode, messages", [
    ("estimator_bad", ["rank 0 raised DistributedError: distributed fit stopped before training: "
                       "rank 1: ValueError: Input X contains NaN",
                       "rank 1 raised ValueError: Input X contains NaN"]),
    ("estimator_data", [f"rank {r} raised DistributedError: distributed fit stopped before "
                        "training: rank 1 was given different data" for r in (0, 1)]),
])
def test_estimator_bad_input_on_one_rank_fails_every_rank(tmp_path, mode, messages):
    proc, seconds = mpirun(tmp_path, mode, timeout=120)
    assert proc.returncode != 0
    for message in messages:
        assert message in proc.stdout, proc.stdout + proc.stderr
    assert "fit returned" not in proc.stdout
    assert seconds < 60
