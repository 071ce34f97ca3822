"""The one training step after the gradients: (sum over ranks) → finite check → clip → update.

Every training path computes its gradients its own way — the MLP's kernels (``fit``, ``Trainer``,
the estimators), a Tensor objective's backward (custom losses, ``opt.step()`` over a parameter
list), a sum over MPI ranks — and then finishes the step here, in this order:

    loss = reduce(loss)          gradients and loss summed over the ranks (data-parallel only)
    finite check                 a loss (or, without one, a gradient) that is NaN or infinite
                                 raises NonFiniteLossError; nothing has moved yet
    before_update()              the per-step learning rate, when a schedule sets one
    clip                         ‖g‖ over all gradients as one vector capped at max_norm
    update()                     the optimizer's in-place update of every parameter, all or none

The fused native paths (a whole step or epoch in one call on the cpu and cuda backends) run the
same sequence inside the backend and are tested equal to it, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the model keeps its last finite parameters."""


def all_finite(arrays):
    """Whether every entry of every array (numpy or CuPy) is finite; one flag read back."""
    ok = True
    for a in arrays:
        ok = ok & np.isfinite(a).all()
    return bool(ok)


def step_loss(values):
    """The step's loss from the loss terms ``MLP.compute_gradients`` returns (the data loss,
    then one penalty per layer): a float, added in their order."""
    total = float(values[0])
    for value in values[1:]:
        total += float(value)
    return total


def clip_norm(grads, max_norm):
    """Scales the gradients in place so that their global norm ‖g‖ (all of them as one vector)
    is at most ``max_norm`` (by max_norm / (‖g‖ + 1e-6), PyTorch's factor); returns ‖g‖
    before clipping."""
    total = 0.0
    for g in grads:
        total += float((g * g).sum())
    total = math.sqrt(total)
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


def finish_step(update, grads, loss=None, *, reduce=None, before_update=None,
                clip_grad_norm=None):
    """The step after the gradients (this module's docstring); returns the step's loss.

    update: a callable that applies the optimizer's update to every parameter (in place).
    grads: the gradient arrays ``update`` will read (clipped here in place).
    loss: the step's loss as a float when it is known; None checks the gradients instead.
    reduce: a callable loss -> loss that sums the gradients (in place) and the loss over the
        ranks (backprop.distributed); None on one process.
    before_update: a callable run after the checks, just before clipping and the update.
    clip_grad_norm: a maximum global norm of the gradients, or None.
    """
    if reduce is not None:
        loss = reduce(loss)
    if loss is None:
        if not all_finite(grads):
            raise NonFiniteLossError("a gradient is NaN or infinite")
    elif not math.isfinite(loss):
        raise NonFiniteLossError(f"the loss is {loss}")
    if before_update is not None:
        before_update()
    if clip_grad_norm is not None:
        clip_norm(grads, clip_grad_norm)
    update()
    return loss
