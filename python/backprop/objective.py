"""User-defined objectives for training: the gradient half of a step, written with Tensors.

An objective is either

- a callable ``objective(net) -> scalar Tensor``, built from any number of ``net(...)`` calls
  and any Tensor operations (a physics-informed loss, a sum of several data terms), or
- a loss callable ``loss(F, Y) -> scalar Tensor`` of the outputs F = net(X) and the targets Y
  (both Tensors), which ``loss_objective`` turns into the first kind for one batch.

``value_and_grads`` evaluates it, backpropagates through the recorded graph (each dense layer a
``dense_forward``/``dense_backward`` node) and writes dLoss/dW_l, dLoss/db_l into the model's
gradient buffers ``net.dW``, ``net.db`` (the layout of ``MLP.grads``), so the optimizer update
that follows is the library's own (``backprop.step.finish_step``, then
``OptimizerState.apply(backend, net.params, net.grads)``).
"""

from __future__ import annotations

from .step import finish_step
from .tensor.autograd import run
from .tensor.core import Tensor, is_backend_array, leaf
from .tensor.dense import parameters


def loss_objective(loss, X, Y):
    """The objective ``net -> loss(net(X), Y)`` for one batch (X, Y arrays of the model's backend,
    or Tensors)."""
    if not callable(loss):
        raise TypeError(f"loss must be a callable (F, Y) -> scalar Tensor; got {type(loss).__name__}")

    def objective(net):
        Yt = Y if isinstance(Y, Tensor) else leaf(_on_backend(net, Y), net.backend)
        return loss(net(X, standardize=False), Yt)  # X: the caller's prepared (standardized) rows
    objective.__name__ = getattr(loss, "__name__", "loss")
    return objective


def _on_backend(net, Y):
    Y = net.backend.asarray(Y, net.dtype) if not (is_backend_array(net.backend, Y) and Y.dtype == net.dtype) else Y
    return Y


def value_and_grads(net, objective, l1=0.0, l2=0.0):
    """The objective's value (a float, with the L1/L2 penalty when given), and its gradients with
    respect to the model's parameters written into ``net.dW`` and ``net.db``.

    A parameter the objective does not use gets a zero gradient. The penalty is the library's
    (``weight_penalty`` kernel: l1 Σ|W| + (l2/2) Σ W² added to the value, its gradient to dW).
    """
    if not callable(objective):
        raise TypeError(f"objective must be a callable net -> scalar Tensor; got {type(objective).__name__}")
    L = objective(net)
    name = getattr(objective, "__name__", "objective")
    if not isinstance(L, Tensor):
        raise TypeError(f"objective {name!r} returned a {type(L).__name__}, not a Tensor")
    if L.value.size != 1:
        raise ValueError(f"objective {name!r} returned a tensor of shape {L.shape}; it must be a scalar")
    if L.backend is not net.backend:
        raise TypeError(f"objective {name!r} returned a tensor on backend {L.backend.name!r}; the "
                        f"model is on {net.backend.name!r}")
    params = parameters(net)
    value = float(net.backend.to_numpy(L.value).reshape(-1)[0])
    if L.requires_grad:
        grads = run([L], None, False, False, inputs=params, where=f"objective {name!r}")
    else:
        grads = [None] * len(params)
    for buf, g in zip(net.grads, grads):
        if g is None:
            buf.fill(0)
        else:
            buf[...] = g
    if l1 != 0 or l2 != 0:
        for W, dW in zip(net.W, net.dW):
            value += float(net.backend._weight_penalty(W, dW, l1, l2))
    return value


def step(net, state, objective, l1=0.0, l2=0.0):
    """One training step on a user objective: gradients into the model's buffers, then the
    library's optimizer update (``state`` an ``optim.OptimizerState``), finished by
    ``backprop.step.finish_step``. Returns the value before the update; a value that is not
    finite raises NonFiniteLossError (a FloatingPointError) before the update."""
    value = value_and_grads(net, objective, l1, l2)
    return finish_step(lambda: state.apply(net.backend, net.params, net.grads), net.grads, value)
