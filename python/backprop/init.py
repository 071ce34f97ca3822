"""Weight initialization: Xavier (Glorot & Bengio), He and LeCun, all normal, biases zero.

Names follow the frameworks (and Raissi's code): ``xavier`` is N(0, 2/(fan_in + fan_out)) —
what the vectorized-backprop seed calls "Bengio" —, ``he`` is N(0, 2/fan_in), and ``lecun`` is
N(0, 1/fan_in) — what that seed calls "Xavier".
"""

from __future__ import annotations

import numpy as np

from ._checks import check_name


# Var(W) = 2 / (fan_in + fan_out)
def xavier(fan_in, fan_out, rng):
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))


# Var(W) = 2 / fan_in
def he(fan_in, fan_out, rng):
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


# Var(W) = 1 / fan_in
def lecun(fan_in, fan_out, rng):
    return rng.normal(0.0, np.sqrt(1.0 / fan_in), size=(fan_in, fan_out))


INITS = {"xavier": xavier, "he": he, "lecun": lecun}


def init_params(layers, init, seed):
    """float64 weights W_l (p_l x p_{l+1}) and zero biases b_l (p_{l+1}) for ``layers``.

    Drawn on the host with numpy's generator, so every backend starts from the same numbers.
    """
    draw = INITS[check_name("init", init, tuple(INITS))]
    rng = np.random.default_rng(seed)
    weights = [draw(p, q, rng) for p, q in zip(layers[:-1], layers[1:])]
    biases = [np.zeros(q) for q in layers[1:]]
    return weights, biases
