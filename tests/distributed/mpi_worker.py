"""Run under mpiexec by test_mpi.py: ``mpi_worker.py OUTDIR MODE``.

MODE "scenarios": every scenario of scenarios.py, parameters and history saved per rank.
MODE "raise": rank 1 raises in the middle of fit (every rank must exit, non-zero, quickly).
MODE "bad_input": rank 1 passes targets of the wrong width (every rank must raise the message).
MODE "estimators": the estimator scenarios (MLPRegressor/MLPClassifier with comm), saved per rank.
MODE "estimator_bad": rank 1's X has a NaN (every rank must raise, no training).
MODE "estimator_data": rank 1 passes different y (every rank must raise DistributedError).
MODE "misaligned": reduction="fixed" with shards that cut a block (every rank must raise).
"""

import os
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from tests.cuda_emu import install_if_requested  # noqa: E402

install_if_requested()  # BACKPROP_TEST_CUDA_EMULATOR=1: "cuda" is the CPU emulator
if os.environ.get("BACKPROP_TEST_FAKE_NCCL") == "1":  # and NCCL an MPI stand-in
    from tests.distributed import fakenccl
    fakenccl.install()
from tests.distributed.scenarios import SCENARIOS, run  # noqa: E402

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
out, mode = sys.argv[1], sys.argv[2]

if mode == "scenarios":
    names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(SCENARIOS)
    saved = {}
    for name in names:
        net, history = run(name, comm=comm, rank=rank, size=size)
        for l, (W, b) in enumerate(zip(net.weights, net.biases)):
            saved[f"{name}/W{l}"], saved[f"{name}/b{l}"] = W, b
        saved[f"{name}/loss"] = np.asarray(history.loss)
        saved[f"{name}/val_loss"] = np.asarray(history.val_loss)
        saved[f"{name}/stopped"] = np.asarray(-1 if history.stopped_epoch is None
                                              else history.stopped_epoch)
    if len(sys.argv) <= 3:
        from tests.distributed.scenarios import run_trainer
        net = run_trainer(comm, rank, size)
        for l, (W, b) in enumerate(zip(net.weights, net.biases)):
            saved[f"trainer/W{l}"], saved[f"trainer/b{l}"] = W, b
    np.savez(os.path.join(out, f"rank{rank}.npz"), **saved)
    if os.environ.get("BACKPROP_TEST_FAKE_NCCL") == "1":
        print(f"rank {rank}: nccl allReduce calls: {fakenccl.calls['allReduce']}", flush=True)
elif mode == "raise":
    def schedule(epoch):
        if rank == 1 and epoch == 2:
            raise RuntimeError("rank 1 fails on purpose in epoch 2")
        return 1e-2
    run("adam", comm=comm, rank=rank, size=size, lr_schedule=schedule, epochs=1000)
    print("fit returned", flush=True)
elif mode == "trainer_raise":  # a user's loop over Trainer steps; rank 1 raises, uncaught
    import backprop as bp
    net = bp.MLP([4, 8, 3], dtype="float64", seed=0)
    trainer = bp.Trainer(net, "mse", "adam", comm=comm)
    X = np.zeros((10, 4)) + rank
    Y = np.zeros((10, 3))
    for step in range(100000):
        trainer.step(net.input_array(X), net.target_array(Y, 10, "mse"))
        if rank == 1 and step == 3:
            raise RuntimeError("rank 1 fails on purpose in its own loop")
    print("loop finished", flush=True)
elif mode == "take_data":  # shard="take" with other values (not other shapes) on rank 1
    import backprop as bp
    from backprop.train import fit
    X = np.zeros((10, 4)) + (0.5 if rank == 1 else 0.0)
    net = bp.MLP([4, 8, 3], dtype="float64", seed=0)
    try:
        fit(net, X, np.zeros((10, 3)), epochs=2, comm=comm)
        print(f"rank {rank} fit returned", flush=True)
    except Exception as exc:
        print(f"rank {rank} raised {type(exc).__name__}: {exc}", flush=True)
        sys.exit(3)
elif mode == "bad_input":
    import backprop as bp
    X = np.zeros((10, 4))
    Y = np.zeros((10, 3 if rank == 0 else 2))
    net = bp.MLP([4, 8, 3], dtype="float64", seed=0)
    try:
        from backprop.train import fit
        fit(net, X, Y, epochs=2, comm=comm, shard="given")
    except Exception as exc:
        print(f"rank {rank} raised {type(exc).__name__}: {exc}", flush=True)
        sys.exit(3)
elif mode == "misaligned":
    import backprop as bp
    from backprop.train import fit
    n = 3 if rank == 0 else 7
    net = bp.MLP([4, 8, 3], dtype="float64", seed=0)
    try:
        fit(net, np.zeros((n, 4)), np.zeros((n, 3)), epochs=2, comm=comm, shard="given",
            reduction="fixed", grad_blocks=2)
    except Exception as exc:
        print(f"rank {rank} raised {type(exc).__name__}: {exc}", flush=True)
        sys.exit(3)
elif mode == "estimators":
    from tests.distributed.scenarios import ESTIMATORS, run_estimator
    saved = {}
    for name in ESTIMATORS:
        est = run_estimator(name, comm)
        for l, (W, b) in enumerate(zip(est.coefs_, est.intercepts_)):
            saved[f"{name}/W{l}"], saved[f"{name}/b{l}"] = W, b
        saved[f"{name}/loss_curve"] = np.asarray(est.loss_curve_)
        saved[f"{name}/n_iter"] = np.asarray(est.n_iter_)
        saved[f"{name}/validation_scores"] = np.asarray(est.validation_scores_ or [])
        if hasattr(est, "classes_"):
            saved[f"{name}/classes"] = est.classes_
    np.savez(os.path.join(out, f"rank{rank}.npz"), **saved)
elif mode in ("estimator_bad", "estimator_data"):
    import backprop as bp
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    if rank == 1:
        if mode == "estimator_bad":
            X[4, 1] = np.nan
        else:
            y = y + 1.0
    try:
        bp.MLPRegressor((5,), dtype="float64", max_iter=3, random_state=0, comm=comm).fit(X, y)
        print(f"rank {rank} fit returned", flush=True)
    except Exception as exc:
        print(f"rank {rank} raised {type(exc).__name__}: {exc}", flush=True)
        sys.exit(3)
