"""The estimators' weighted losses, and the weighted gradient of one batch.

Each loss writes G = dL/dF in place for the rows' weights w (already divided by Σ w) and returns
(objective, scikit-learn's reported value); ``loss_and_grad`` runs the model's forward pass,
the loss, the backward pass and the penalty on one batch (``loss_and_grad_dropout`` with
inverted-dropout masks).
"""

from __future__ import annotations

import numpy as np

from .backends import array_module


def squared_error(F, Y, w, G):
    """½ Σ w_i Σ_j (F-Y)²_ij with w already divided by Σ w; G = w (F - Y). Returns
    (objective value, scikit-learn's reported value = the objective / outputs)."""
    xp = array_module(F)
    R = F - Y
    G[...] = R * w[:, None]
    value = 0.5 * float(xp.sum(w[:, None] * R * R, dtype=xp.float64))
    return value, value / F.shape[1]


def softmax_cross_entropy(F, Y, w, G):
    """-Σ w_i Σ_j Y_ij log softmax(F)_ij; G = w (softmax(F) - Y)."""
    xp = array_module(F)
    Z = F - F.max(axis=1, keepdims=True)
    E = xp.exp(Z)
    S = E.sum(axis=1, keepdims=True)
    xp.divide(E, S, out=E)  # P = softmax(F)
    xp.subtract(E, Y, out=E)
    xp.multiply(E, w[:, None], out=G)
    # -Σ w Y log P = Σ w (log S - Y·Z), Y's rows summing to 1
    value = float(xp.dot(w, (xp.log(S[:, 0]) - (Y * Z).sum(axis=1)).astype(xp.float64)))
    return value, value


def logistic(F, Y, w, G):
    """One logistic output: -Σ w_i [y log σ(z) + (1-y) log(1-σ(z))]; G = w (σ(z) - y)."""
    xp = array_module(F)
    P = 0.5 * (1.0 + xp.tanh(0.5 * F))  # σ(z), without overflow
    G[...] = (P - Y) * w[:, None]
    # softplus(z) - y z, computed without overflow
    terms = xp.maximum(F, 0) + xp.log1p(xp.exp(-xp.abs(F))) - Y * F
    value = float(xp.sum(w[:, None] * terms, dtype=xp.float64))
    return value, value


def loss_and_grad(net, X, Y, w, loss, alpha, l1):
    """The weighted loss of ``net`` on a batch and its gradient in ``net.grads``.

    X, Y, w: arrays of the backend (w the raw weights of the batch's rows). Returns
    (objective, reported loss), each with the penalty, both scaled by 1 / Σ w.
    """
    ws = net.workspace(X.shape[0])
    F = net.run_forward(X, ws)
    sw_sum = float(array_module(w).sum(w, dtype=np.float64))
    wn = (w / sw_sum).astype(F.dtype, copy=False)
    value, reported = loss(F, Y, wn, ws.G[-1])
    net.run_backward(X, ws)
    if alpha or l1:
        penalty = 0.0
        for W, dW in zip(net.W, net.dW):
            penalty += float(net.backend._weight_penalty(W, dW, l1 / sw_sum, alpha / sw_sum))
        value += penalty
        reported += penalty
    return value, reported


def loss_and_grad_dropout(net, trainer, X, Y, w, loss, alpha, l1):
    """``loss_and_grad`` with inverted-dropout masks on the hidden layers (training only)."""
    masks = trainer.masks(X.shape[0])
    ws = net.workspace(X.shape[0])
    ws.dropout_buffers(net.backend, net.layers, net.dtype)
    F = net.run_forward(X, ws, masks)
    sw_sum = float(array_module(w).sum(w, dtype=np.float64))
    value, reported = loss(F, Y, (w / sw_sum).astype(F.dtype, copy=False), ws.G[-1])
    net.run_backward(X, ws, masks)
    for W, dW in zip(net.W, net.dW):
        if alpha or l1:
            p = float(net.backend._weight_penalty(W, dW, l1 / sw_sum, alpha / sw_sum))
            value += p
            reported += p
    return value, reported
