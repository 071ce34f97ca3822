"""Gradient clipping over parameter Tensors (PyTorch's ``clip_grad_norm_``)."""

from __future__ import annotations

import numbers

from .._checks import check_rate
from ..step import clip_norm
from ..tensor.core import Tensor


def clip_grad_norm(params, max_norm):
    """Scales the gradients of ``params`` (Tensors; those without a gradient are left out) in
    place so that their global norm ‖g‖, all of them as one vector, is at most ``max_norm``;
    returns ‖g‖ before clipping. Call it between ``L.backward()`` and ``opt.step()``."""
    if isinstance(params, Tensor):
        params = [params]
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"clip_grad_norm: params[{i}] is a {type(p).__name__}, not a Tensor")
    if not isinstance(max_norm, numbers.Real) or isinstance(max_norm, bool):
        raise TypeError(f"clip_grad_norm: max_norm must be a number; got {max_norm!r}")
    max_norm = check_rate(max_norm, "max_norm")
    return clip_norm([p.grad for p in params if p.has_grad], max_norm)
