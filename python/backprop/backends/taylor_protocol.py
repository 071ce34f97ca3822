"""The Taylor-mode kernels of the Backend protocol: a network's derivatives with respect to
its inputs (first and second order) and their backward into the weights.

``TaylorKernels`` is a part of ``Backend`` (backends/base.py), which derives from it: the same
rule holds here, each public kernel checks its arguments and calls the backend's
``_<kernel>``. ``TaylorSaved`` is what the forward keeps for the backward.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TaylorSaved(NamedTuple):
    """What ``taylor_forward`` keeps for ``taylor_backward`` (every layer's output and streams).

    As[l]: n x p_l (As[0] is X), dAs[l]: k1 x n x p_l, d2As[l]: k2 x n x p_l, for l = 0..L;
    ``first`` the k1 input indices of the streams, ``second`` the k2 pairs (a, c) of positions
    in ``first`` (not input indices) of the second-derivative streams. ``taylor_forward`` makes
    As[l], dAs[l], d2As[l] (l >= 1) views of one (1 + k1 + k2) x n x p_l buffer, in that order,
    and dAs[0], d2As[0] views of one (k1 + k2) x n x p_0 buffer, so that a backend can reach
    every stream of a layer from one pointer (the cpu backend relies on it). What a backend
    keeps in the hidden layers' buffers is its own: the cpu backend keeps there, block by block
    of samples, A and the streams before the activation (Ḣ, Ḧ, which its backward needs),
    feature-major (csrc/taylor.hpp), so its hidden As, dAs, d2As are not n x p arrays of
    values. The last layer's are always the results, F, dF and d2F."""
    As: list
    dAs: list
    d2As: list
    first: tuple
    second: tuple


class TaylorKernels:
    """``taylor_forward`` and ``taylor_backward``, with their checks (a part of ``Backend``:
    it relies on Backend's ``_args``, ``_missing``, ``reusable`` and memory kernels)."""

    def taylor_forward(self, X, Ws, bs, activations, first, second=()):
        """The network's output and its first and second derivatives w.r.t. the inputs.

        X: n x d, Ws[l]: p_l x p_{l+1}, bs[l]: p_{l+1}, activations[l] the activation of layer
        l's output (the whole network in one call). ``first``: k1 distinct input indices i;
        ``second``: k2 pairs (i, j) of input indices, each of which must be in ``first`` (a
        second-derivative stream needs both first-derivative streams). Per layer, with
        act' and act'' written from the output A':

            H = A W + b           Ḣ_i = Ȧ_i W           Ḧ_ij = Ä_ij W
            A' = act(H)           Ȧ'_i = act'(H) ⊙ Ḣ_i
            Ä'_ij = act''(H) ⊙ Ḣ_i ⊙ Ḣ_j + act'(H) ⊙ Ḧ_ij

        starting from A_0 = X, Ȧ_i = e_i (a one-hot row per sample), Ä_ij = 0.

            tanh      act' = 1 - A²        act'' = -2 A act'          act''' = act' (6A² - 2)
            sigmoid   act' = A (1 - A)     act'' = act' (1 - 2A)      act''' = act' (1 - 6A + 6A²)
            identity  1, 0, 0;   relu, leaky_relu: act' piecewise, act'' = act''' = 0

        Returns (F, dF, d2F, saved): F n x p_L, dF k1 x n x p_L (dF[a] = dF/dx_{first[a]}),
        d2F k2 x n x p_L (d2F[q] = d²F/dx_i dx_j for second[q] = (i, j)), and a ``TaylorSaved``
        for ``taylor_backward``. relu and leaky_relu have act'' = 0 almost everywhere: second
        derivatives through them are refused (ValueError).
        """
        args = self._args("taylor_forward")
        args.input("X", X, ndim=2)
        Ws, bs, activations = self._taylor_layers(args, Ws, bs, activations, X.shape[1])
        first, pairs = self._taylor_directions(args, first, second, X.shape[1], activations)
        saved = self._taylor_buffers(X, Ws, first, pairs)
        self._taylor_forward(Ws, bs, activations, saved)
        L = len(Ws)
        return saved.As[L], saved.dAs[L], saved.d2As[L], saved

    def _taylor_buffers(self, X, Ws, first, pairs):
        """The TaylorSaved that ``_taylor_forward`` fills: one buffer per layer,
        [A; Ȧ_1..Ȧ_k1; Ä_1..Ä_k2] (the input's: [Ȧ; Ä], As[0] is X itself)."""
        n = X.shape[0]
        k1, k2 = len(first), len(pairs)
        widths = [X.shape[1]] + [W.shape[1] for W in Ws]
        stacks = self.reusable([(k1 + k2, n, widths[0])] + [(1 + k1 + k2, n, w) for w in widths[1:]],
                               X.dtype)
        As = [X] + [S[0] for S in stacks[1:]]
        dAs = [stacks[0][:k1]] + [S[1:1 + k1] for S in stacks[1:]]
        d2As = [stacks[0][k1:]] + [S[1 + k1:] for S in stacks[1:]]
        return TaylorSaved(As, dAs, d2As, first, pairs)

    def _taylor_forward(self, Ws, bs, activations, saved):
        """Writes saved.As[1:], saved.dAs, saved.d2As (saved.As[0] is X)."""
        self._missing("taylor_forward")

    def taylor_backward(self, saved, Ws, activations, G, dG=None, d2G=None, dWs=None, dbs=None):
        """The weight and bias gradients through ``taylor_forward``'s network.

        G = dLoss/dF (n x p_L), dG = dLoss/d(dF) (k1 x n x p_L), d2G = dLoss/d(d2F)
        (k2 x n x p_L; None: zero). Per layer, from the last, with σ1, σ2, σ3 = act', act'',
        act''' at H (written from the output A') and the gradients G_A, Ġ_i, G̈_ij arriving at
        A', Ȧ'_i, Ä'_ij:

            G̈H_ij = σ1 ⊙ G̈_ij
            ĠH_i  = σ1 ⊙ Ġ_i + Σ_{(i,j)} σ2 ⊙ Ḣ_j ⊙ G̈_ij + Σ_{(j,i)} σ2 ⊙ Ḣ_j ⊙ G̈_ji
            GH    = σ1 ⊙ G_A + Σ_i σ2 ⊙ Ḣ_i ⊙ Ġ_i + Σ_ij (σ3 ⊙ Ḣ_i ⊙ Ḣ_j + σ2 ⊙ Ḧ_ij) ⊙ G̈_ij
            dW    = Aᵀ GH + Σ_i Ȧ_iᵀ ĠH_i + Σ_ij Ä_ijᵀ G̈H_ij        db = 1ᵀ GH
            G_A ← GH Wᵀ,   Ġ_i ← ĠH_i Wᵀ,   G̈_ij ← G̈H_ij Wᵀ          (the previous layer's)

        (db has only the GH term: Ḣ and Ḧ carry no bias.) Returns (dWs, dbs), lists shaped as
        Ws and the biases (allocated when None).
        """
        args = self._args("taylor_backward")
        if not isinstance(saved, TaylorSaved):
            args.fail(TypeError, f"saved must be the TaylorSaved that taylor_forward returned; "
                                 f"got {type(saved).__name__}")
        L = len(saved.As) - 1
        if not isinstance(Ws, (list, tuple)) or len(Ws) != L:
            args.fail(ValueError, f"Ws must be the {L} weight matrices taylor_forward saw")
        for l, W in enumerate(Ws):
            args.input(f"Ws[{l}]", W, shape=(saved.As[l].shape[1], saved.As[l + 1].shape[1]))
        if isinstance(activations, str) or len(activations) != L:
            args.fail(ValueError, f"give one activation per layer ({L})")
        activations = [args.activation(a) for a in activations]
        F = saved.As[L]
        k1, k2 = len(saved.first), len(saved.second)
        args.input("G", G, shape=F.shape)
        dG = self._taylor_stream_gradient(args, "dG", dG, (k1,) + tuple(F.shape))
        d2G = self._taylor_stream_gradient(args, "d2G", d2G, (k2,) + tuple(F.shape))
        if dWs is None:
            dWs = [None] * L
        if dbs is None:
            dbs = [None] * L
        if len(dWs) != L or len(dbs) != L:
            args.fail(ValueError, f"dWs and dbs must be lists of {L} arrays (or None)")
        dWs = [args.output(f"dWs[{l}]", dW, Ws[l].shape) for l, dW in enumerate(dWs)]
        dbs = [args.output(f"dbs[{l}]", db, (Ws[l].shape[1],)) for l, db in enumerate(dbs)]
        self._taylor_backward(saved, list(Ws), activations, G, dG, d2G, dWs, dbs)
        return dWs, dbs

    def _taylor_backward(self, saved, Ws, activations, G, dG, d2G, dWs, dbs):
        """Writes dWs and dbs (dG, d2G are arrays: zeros where the caller gave None)."""
        self._missing("taylor_backward")

    # the checks the two Taylor kernels share

    def _taylor_layers(self, args, Ws, bs, activations, d):
        if not isinstance(Ws, (list, tuple)) or not isinstance(bs, (list, tuple)) or not Ws:
            args.fail(TypeError, "Ws and bs must be non-empty lists of arrays (one per layer)")
        if isinstance(activations, str) or len(activations) != len(Ws) or len(bs) != len(Ws):
            args.fail(ValueError, f"{len(Ws)} weight matrices and {len(bs)} biases: give one "
                                  "weight matrix, bias and activation per layer")
        p = d
        for l, (W, b) in enumerate(zip(Ws, bs)):
            args.input(f"Ws[{l}]", W, ndim=2)
            if W.shape[0] != p:
                args.fail(ValueError, f"Ws[{l}] {tuple(W.shape)} does not chain: its input has "
                                      f"{p} columns")
            p = W.shape[1]
            args.input(f"bs[{l}]", b, shape=(p,))
        return list(Ws), list(bs), [args.activation(a) for a in activations]

    def _taylor_directions(self, args, first, second, d, activations):
        def index(i, what):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < d:
                args.fail(ValueError, f"{what}: input index {i!r} does not exist (the input has "
                                      f"{d} columns: 0..{d - 1})")
            return int(i)
        first = tuple(index(i, "first") for i in first)
        if len(set(first)) != len(first):
            args.fail(ValueError, f"first has repeated input indices: {first}")
        pairs = []
        for pair in second:
            if isinstance(pair, (str, bytes)) or len(pair) != 2:
                args.fail(ValueError, f"second: each entry is a pair (i, j) of input indices; "
                                      f"got {pair!r}")
            i, j = (index(x, "second") for x in pair)
            if i not in first or j not in first:
                args.fail(ValueError, f"second: the pair ({i}, {j}) needs the first-derivative "
                                      f"streams of both inputs; first is {first}")
            pairs.append((first.index(i), first.index(j)))
        if pairs:
            flat = [a for a in activations if a in ("relu", "leaky_relu")]
            if flat:
                args.fail(ValueError, f"second derivatives through {flat[0]} are refused: its "
                                      "second derivative is 0 almost everywhere (undefined at 0), "
                                      "so d²F would say nothing; use tanh, sigmoid or identity")
        return first, tuple(pairs)

    def _taylor_stream_gradient(self, args, label, x, shape):
        if x is None:
            return self.zeros(shape, args.dtype)
        if tuple(x.shape) != tuple(shape):
            args.fail(ValueError, f"{label} must have shape {tuple(shape)} (one n x p_L gradient "
                                  f"per stream); got {tuple(x.shape)}")
        if shape[0] == 0:
            return x
        return args.input(label, x, shape=shape)
