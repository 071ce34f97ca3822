"""The distributed runs the tests compare with one process: each is fit's options on the data
of ``data(name)``; ``mpi_worker.py`` runs them under mpiexec, the tests run the references."""

import numpy as np

N, P0, K = 53, 4, 3  # 53 rows: the ranks' shards and the minibatches do not divide evenly

SCENARIOS = {
    "gd": dict(loss="mse", optimizer="gd", lr=0.1, epochs=6),
    "sgd": dict(loss="mse", optimizer="sgd", lr=0.05, epochs=4, batch_size=8),
    "momentum": dict(loss="mse", optimizer={"name": "sgd", "momentum": 0.9}, lr=0.05, epochs=4,
                     batch_size=8),
    "nesterov": dict(loss="mse", optimizer={"name": "sgd", "momentum": 0.9, "nesterov": True},
                     epochs=4, batch_size=16),
    "adam": dict(loss="mse", optimizer="adam", lr=1e-2, epochs=4, batch_size=8, l1=1e-3, l2=1e-2),
    "noshuffle": dict(loss="mse", optimizer="adam", lr=1e-2, epochs=3, batch_size=10, shuffle=False),
    "sse": dict(loss="sse", optimizer="sgd", lr=1e-3, epochs=4, batch_size=8, l2=1e-2),
    "cross_entropy": dict(loss="cross_entropy", optimizer="adam", lr=1e-2, epochs=4, batch_size=8),
    "bce": dict(loss="bce", optimizer="adam", lr=1e-2, epochs=4, batch_size=8),
    "dropout": dict(loss="mse", optimizer="adam", lr=1e-2, epochs=4, batch_size=8, dropout=0.3),
    "early_stopping": dict(loss="mse", optimizer="adam", lr=0.05, epochs=40, batch_size=8,
                           validation=True, early_stopping=3),
    "given": dict(loss="mse", optimizer="adam", lr=1e-2, epochs=4, batch_size=8, shard="given"),
    "fixed": dict(loss="mse", optimizer="adam", lr=1e-2, epochs=4, batch_size=8,
                  reduction="fixed", grad_blocks=4, dropout=0.2),
    "fixed_given": dict(loss="bce", optimizer="adam", lr=1e-2, epochs=3, batch_size=8,
                        reduction="fixed", grad_blocks=2, shard="given"),
    "fixed_sse": dict(loss="sse", optimizer="sgd", lr=1e-3, epochs=4, batch_size=16,
                      reduction="fixed", grad_blocks=2, l1=1e-3),
    "standardize": dict(loss="mse", optimizer="adam", lr=1e-2, epochs=3, batch_size=8,
                        standardize=True, validation=True, early_stopping={"patience": 50}),
    "cpu": dict(loss="mse", optimizer="adam", lr=1e-2, epochs=4, batch_size=8, backend="cpu"),
}

# the cuda backend's kernels under the CPU emulator (tests/cuda_emu), host-staged transport
EMULATED = {
    "cuda_adam": dict(loss="mse", optimizer="adam", lr=1e-2, epochs=3, batch_size=8,
                      backend="cuda", dropout=0.2),
    "cuda_fixed": dict(loss="cross_entropy", optimizer="sgd", lr=0.05, epochs=3, batch_size=16,
                       backend="cuda", reduction="fixed", grad_blocks=2),
}
ALL = dict(SCENARIOS, **EMULATED)


def data(name):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N, P0))
    loss = ALL[name]["loss"]
    if loss == "cross_entropy":
        Y = rng.integers(0, K, size=N)
    elif loss == "bce":
        Y = (rng.random((N, K)) < 0.5).astype(float)
    else:
        Y = rng.normal(size=(N, K))
    Xv, Yv = X[:17] + 0.1, Y[:17]
    return X, Y, (Xv, Yv)


def run(name, comm=None, rank=0, size=1, **extra):
    """fit on one scenario; with comm, on the rank's part. Returns (net, history)."""
    import backprop as bp
    from backprop.optim import SGD
    from backprop.train import fit

    options = dict(ALL[name], **extra)
    backend = options.pop("backend", "numpy")
    opt = options.pop("optimizer")
    if isinstance(opt, dict):
        opt = dict(opt)
        opt.pop("name")
        opt = SGD(lr=options.pop("lr", 0.02), **opt)
    validation = options.pop("validation", False)
    X, Y, val = data(name)
    if comm is None:
        options.pop("shard", None)
        if options.get("grad_blocks") is None:
            options.pop("reduction", None)
    elif options.get("shard") == "given":  # rank r passes its own contiguous rows
        lo, hi = N * rank // size, N * (rank + 1) // size
        X, Y = X[lo:hi], Y[lo:hi]
        vlo, vhi = 17 * rank // size, 17 * (rank + 1) // size
        val = (val[0][vlo:vhi], val[1][vlo:vhi])
    net = bp.MLP([P0, 16, 16, K], activation="tanh", backend=backend, dtype="float64", seed=11)
    history = fit(net, X, Y, optimizer=opt, seed=5, comm=comm,
                     validation_data=val if validation else None, **options)
    return net, history


def run_trainer(comm=None, rank=0, size=1):
    """Trainer used directly: two epochs (one shuffled) on this rank's contiguous rows, then one
    step on this rank's part of a batch. Returns the model."""
    import backprop as bp
    from backprop.train import Trainer

    X, Y, _ = data("adam")
    lo, hi = N * rank // size, N * (rank + 1) // size
    net = bp.MLP([P0, 16, 16, K], activation="tanh", dtype="float64", seed=11 + rank)
    if comm is None:
        trainer = Trainer(net, "mse", "adam", lr=1e-2, fused=False)
    else:
        trainer = Trainer(net, "mse", "adam", lr=1e-2, comm=comm)
    mine = slice(lo, hi)
    trainer.epoch(X[mine], Y[mine], 8)
    trainer.epoch(X[mine], Y[mine], 8, order=np.random.default_rng(3).permutation(N))
    b_lo, b_hi = 20 * rank // size, 20 * (rank + 1) // size  # the batch: global rows 0..19
    trainer.step(X[b_lo:b_hi], Y[b_lo:b_hi])
    return net


# ---- the scikit-learn estimators with comm (shard "take": every rank passes all the rows) ----

ESTIMATORS = {
    "reg_adam_weights": dict(kind="reg", solver="adam", alpha=1e-3, batch_size=16, max_iter=6,
                             weights=True),
    "reg_sgd_early": dict(kind="reg", solver="sgd", learning_rate_init=0.05, batch_size=8,
                          max_iter=25, early_stopping=True, n_iter_no_change=2, tol=1e-2),
    "reg_dropout_l1": dict(kind="reg", solver="adam", dropout=0.2, l1=1e-3, batch_size=16,
                           max_iter=4, weights=True),
    "reg_lbfgs": dict(kind="reg", solver="lbfgs", alpha=1e-2, max_iter=15, weights=True),
    "clf_strings": dict(kind="clf", solver="adam", batch_size=16, max_iter=6, classes=3),
    "clf_binary_weights": dict(kind="clf", solver="sgd", learning_rate_init=0.1, batch_size=8,
                               max_iter=5, classes=2, weights=True),
    "reg_noseed": dict(kind="reg", solver="adam", batch_size=16, max_iter=3, random_state=None),
}


def estimator_data(name):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(N, P0))
    options = ESTIMATORS[name]
    if options["kind"] == "reg":
        y = X @ rng.normal(size=P0) + 0.1 * rng.normal(size=N)
    else:
        y = np.array(["apple", "banana", "cherry"])[rng.integers(0, options["classes"], N)]
    w = rng.uniform(0.2, 2.0, N) if options.get("weights") else None
    w = None if w is None else np.where(np.arange(N) % 7 == 0, 0.0, w)  # some zero weights
    return X, y, w


def run_estimator(name, comm=None):
    """One estimator fit of a scenario (float64); with comm, on every rank's copy of the data."""
    import warnings

    import backprop as bp

    options = dict(ESTIMATORS[name])
    kind = options.pop("kind")
    options.pop("classes", None)
    options.pop("weights", None)
    options.setdefault("random_state", 0)
    X, y, w = estimator_data(name)
    cls = bp.MLPRegressor if kind == "reg" else bp.MLPClassifier
    est = cls((9, 6), activation="tanh", dtype="float64", comm=comm, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: these fits are short on purpose
        est.fit(X, y, sample_weight=w)
    return est
