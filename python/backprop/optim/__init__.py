"""Optimizers: update rules over parameter lists or a model's arrays, schedules, L-BFGS.

    opt = bp.optim.Adam([*net.parameters(), lam], lr=1e-3)     # PyTorch's convention
    for step in range(n):
        opt.zero_grad(); L = objective(); L.backward(); opt.step()

The modules, one idea each:

    base       the Optimizer: hyper-parameters, parameter groups, step, state_dict
    rules      GD, SGD (momentum, Nesterov), Adam, AdamW: one parameter's in-place update
    state      OptimizerState (slots and step count), deferred_sigint (updates all or none)
    clip       clip_grad_norm over parameter Tensors
    schedules  learning-rate schedules and ReduceLROnPlateau
    lbfgs      L-BFGS with a strong-Wolfe line search
"""

from .base import Optimizer
from .clip import clip_grad_norm
from .lbfgs import LBFGS, LBFGSResult
from .rules import GD, OPTIMIZERS, SGD, Adam, AdamW, get_optimizer
from .schedules import ReduceLROnPlateau, cosine_decay, exponential_decay, piecewise_constant
from .state import OptimizerState, deferred_sigint

__all__ = ["Optimizer", "GD", "SGD", "Adam", "AdamW", "LBFGS", "LBFGSResult", "OPTIMIZERS",
           "get_optimizer", "OptimizerState", "deferred_sigint", "clip_grad_norm",
           "piecewise_constant", "exponential_decay", "cosine_decay", "ReduceLROnPlateau"]
