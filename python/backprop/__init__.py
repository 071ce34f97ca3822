"""backprop: dense neural networks trained with explicit backpropagation on three backends.

    import backprop as bp
    net = bp.MLP([1, 50, 50, 1], activation="tanh", backend="numpy", seed=0)
    history = net.fit(X, Y, loss="mse", optimizer="adam", lr=1e-3, epochs=100)
    F = net.predict(X)

Backends: "numpy" (the reference), "cpu" (C++/Eigen), "cuda" (CUDA kernels through CuPy);
``bp.available_backends()`` lists the ones that work on this machine.
"""

from . import optim, tensor
from .backends import BackendUnavailable, available_backends, get_backend, why_unavailable
from .gradcheck import gradcheck
from .model import MLP, Grads
from .standardize import Standardizer
from .tensor import (Tensor, abs, bce, concatenate, cos, cross_entropy, einsum, exp, grad,
                     leaky_relu, log, log_softmax, matmul, mean, mse, no_grad, relu, sigmoid, sin,
                     softmax, sqrt, sse, stack, sum, tanh)
from .threads import get_num_threads, set_num_threads
from .train import EarlyStopping, History, NonFiniteLossError, Trainer

__version__ = "0.1.0"


def __getattr__(name):
    # the estimators import scikit-learn (when installed) only when first asked for
    if name in ("MLPRegressor", "MLPClassifier"):
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'backprop' has no attribute {name!r}")

__all__ = ["MLP", "MLPRegressor", "MLPClassifier", "Grads", "History", "EarlyStopping", "NonFiniteLossError", "Trainer",
           "Standardizer", "Tensor", "einsum", "grad", "no_grad", "gradcheck", "optim", "tensor", "available_backends", "get_backend",
           "why_unavailable", "BackendUnavailable", "set_num_threads", "get_num_threads",
           "__version__",
           # the Tensor functions (also methods of Tensor)
           "tanh", "sigmoid", "relu", "leaky_relu", "exp", "log", "sin", "cos", "sqrt", "abs",
           "sum", "mean", "matmul", "concatenate", "stack", "softmax", "log_softmax", "sse", "mse",
           "cross_entropy", "bce"]
