"""Raissi's example: fit f(x) = x sin(4πx) on [-1, 1] with a [1] + [10]*10 + [1] tanh network.

100 training points, the sum-of-squares loss, full-batch Adam with the tutorial's schedule
(``steps`` steps at each of the rates 1e-3, 1e-4, 1e-5, 1e-6), then the relative L2 error
‖F - f‖ / ‖f‖ on 1,000 test points.
"""

from __future__ import annotations

import time

import numpy as np

from .model import MLP
from .optim import piecewise_constant

RATES = (1e-3, 1e-4, 1e-5, 1e-6)


def target(x):
    return x * np.sin(4 * np.pi * x)


def run(backend="numpy", steps=10000, seed=0, dtype="float32", verbose=False):
    """Trains the example; returns a dict with the network, the error, the steps and the time."""
    X = np.linspace(-1, 1, 100).reshape(-1, 1)
    Y = target(X)
    X_test = np.linspace(-1, 1, 1000).reshape(-1, 1)
    Y_test = target(X_test)
    net = MLP([1] + [10] * 10 + [1], activation="tanh", init="xavier", backend=backend,
              dtype=dtype, seed=seed)
    schedule = piecewise_constant([steps * i for i in range(1, len(RATES))], RATES)
    start = time.perf_counter()
    history = net.fit(X, Y, loss="sse", optimizer="adam", epochs=steps * len(RATES),
                      lr_schedule=schedule, verbose=verbose, seed=seed)
    seconds = time.perf_counter() - start
    F = net.predict(X_test)
    error = float(np.linalg.norm(F - Y_test) / np.linalg.norm(Y_test))
    return {"net": net, "error": error, "steps": history.epochs, "seconds": seconds,
            "final_loss": history.loss[-1], "X": X, "Y": Y, "X_test": X_test, "F": F,
            "Y_test": Y_test}


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install matplotlib (or, in the "
                           "backprop source folder, pip install '.[plot]')") from None
    return matplotlib


def plot(result, path):
    """Draws training data, the truth and the prediction into ``path`` (needs matplotlib)."""
    require_matplotlib().use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result["X_test"], result["Y_test"], "k-", lw=1.5, label="f(x) = x sin(4πx)")
    ax.plot(result["X_test"], result["F"], "r--", lw=1.5, label="network")
    ax.plot(result["X"], result["Y"], "bo", ms=3, label="training data")
    ax.set_xlabel("x")
    ax.set_title(f"relative L2 error {100 * result['error']:.2f}% after {result['steps']} Adam steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
