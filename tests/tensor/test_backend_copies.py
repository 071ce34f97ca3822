"""A copy of a model (pickle, copy.deepcopy: what joblib and scikit-learn's clone do) shares the
registry's backend object: it keeps no memory of its own, and its Tensors work with the Tensors
of ``backend="<name>"``. The Tensor layer's per-backend kernels keep no backend alive."""

import copy
import gc
import pickle
import tracemalloc
import weakref

import numpy as np

import backprop as bp
from backprop.backends import get_backend
from backprop.tensor.kernels import kernels_of


def test_backend_copies_are_the_registry_object(backend):
    be = get_backend(backend)
    assert copy.copy(be) is be
    assert copy.deepcopy(be) is be
    assert copy.deepcopy([be, be])[0] is be
    assert pickle.loads(pickle.dumps(be)) is be


def _use(net, X):
    """Every part of the Tensor layer that touches the backend's memory: derivatives and their
    backward, a forward and a loss."""
    u, ux, uxx = bp.tensor.derivatives(net, X, first=(0,), second=((0, 0),))
    ((u * ux + uxx) ** 2).mean().backward()
    return u


def test_copies_of_a_model_share_its_backend_and_keep_no_memory(backend):
    n = 100 if backend == "cuda" else 2000  # cuda: fewer points, for the emulator's sake
    X = np.random.default_rng(0).normal(size=(n, 2))
    net = bp.MLP([2, 32, 32, 1], backend=backend, dtype="float64", seed=0)
    _use(net, X)
    copies = [lambda m: copy.deepcopy(m), lambda m: pickle.loads(pickle.dumps(m))]
    for make in copies:  # warm up: the first copy, once per kind of copy
        _use(make(net), X)
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for i in range(30):
            net = copies[i % 2](net)
            assert net.backend is get_backend(backend)
            u = _use(net, X)
            # the copy's outputs work with an ordinary Tensor of the same backend
            w = bp.Tensor(np.ones((n, 1)), backend=backend)
            assert float((u * w).sum().item()) == float(u.sum().item())
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    # one derivatives call saves about 4 MB here (2000 points): 30 copies that each kept their own would hold
    # over 100 MB
    assert grown < 8e6, f"memory grew by {grown / 1e6:.1f} MB over 30 copies"


def test_the_tensor_kernels_keep_no_backend_alive():
    be = type(get_backend("numpy"))()  # a backend object that is not the registry's
    assert kernels_of(be) is kernels_of(be)
    t = bp.Tensor(np.ones(3), backend=be, requires_grad=True)
    (t * t).sum().backward()
    ref = weakref.ref(be)
    del be, t
    gc.collect()
    assert ref() is None
