"""Every kernel's edge cases through every backend: the same answer everywhere.

The checks live in one layer (base.py and checks.py), so a bad call raises the same exception
with the same message on every backend, before any native code or launch; a good edge case (one
row, one column, an output written in place where the aliasing rule allows it) gives numpy's
numbers.
"""

import numpy as np
import pytest

from backprop.backends import get_backend

from ..conftest import assert_close


def arrays(bk, dtype):
    """A small factory of fresh backend arrays: a(2, 3) is 2x3 of distinct values."""
    counter = [0]

    def a(*shape, dt=None):
        counter[0] += 1
        size = int(np.prod(shape))
        values = (np.arange(size) % 7 - 3 + 0.25 * counter[0]).reshape(shape) / 4
        return bk.asarray(values, dt or dtype)

    return a


# (id, call(bk, a) -> anything, expected exception, expected message after "<backend> <kernel>: ")
BAD_CALLS = [
    ("gemm-list", lambda bk, a: bk.gemm([[1.0]], a(1, 1)), TypeError,
     "gemm: A must be an array of backend"),
    ("gemm-int", lambda bk, a: bk.gemm(a(2, 2), bk.asarray(np.ones((2, 2)), np.int32)), TypeError,
     "gemm: B must be float32 or float64; got int32"),
    ("gemm-1d", lambda bk, a: bk.gemm(a(3), a(3, 2)), ValueError, "gemm: A must be 2-D; got shape (3,)"),
    ("gemm-inner", lambda bk, a: bk.gemm(a(2, 3), a(4, 2)), ValueError,
     "gemm: op(A) is 2x3 but op(B) is 4x2: the inner sizes differ"),
    ("gemm-beta-no-out", lambda bk, a: bk.gemm(a(2, 2), a(2, 2), beta=1.0), ValueError,
     "gemm: beta != 0 needs out"),
    ("gemm-out-shape", lambda bk, a: bk.gemm(a(2, 3), a(3, 4), out=a(4, 2)), ValueError,
     "gemm: out must have shape (2, 4); got (4, 2)"),
    ("gemm-out-is-A", lambda bk, a: (lambda A: bk.gemm(A, a(2, 2), out=A))(a(2, 2)), ValueError,
     "gemm: out overlaps A"),
    ("gemm-empty", lambda bk, a: bk.gemm(a(0, 3), a(3, 2)), ValueError,
     "gemm: A is empty (shape (0, 3))"),
    ("gemm-alpha-nan", lambda bk, a: bk.gemm(a(2, 2), a(2, 2), alpha=float("nan")), ValueError,
     "gemm: alpha must be finite"),
    ("dense_forward-p_in-0", lambda bk, a: bk.dense_forward(a(4, 0), a(0, 3), a(3), "tanh"),
     ValueError, "dense_forward: A is empty (shape (4, 0))"),
    ("dense_forward-chain", lambda bk, a: bk.dense_forward(a(4, 2), a(3, 3), a(3), "tanh"),
     ValueError, "dense_forward: A (4, 2) and W (3, 3) do not chain"),
    ("dense_forward-b", lambda bk, a: bk.dense_forward(a(4, 3), a(3, 2), a(3), "tanh"), ValueError,
     "dense_forward: b must have shape (2,); got (3,)"),
    ("dense_forward-act", lambda bk, a: bk.dense_forward(a(4, 3), a(3, 2), a(2), "swish"),
     ValueError, "dense_forward: unknown activation 'swish'; valid activations: tanh, sigmoid"),
    ("dense_forward-act-none", lambda bk, a: bk.dense_forward(a(4, 3), a(3, 2), a(2), None),
     ValueError, "dense_forward: unknown activation None"),
    ("dense_forward-out-is-A", lambda bk, a: (lambda A: bk.dense_forward(A, a(2, 2), a(2), "tanh",
                                                                         out=A))(a(3, 2)),
     ValueError, "dense_forward: out overlaps A"),
    ("dense_backward-p_in-0", lambda bk, a: bk.dense_backward(a(4, 3), a(4, 0), a(0, 3), "tanh"),
     ValueError, "dense_backward: W is empty (shape (0, 3))"),
    ("dense_backward-A_prev", lambda bk, a: bk.dense_backward(a(4, 3), a(5, 2), a(2, 3), "tanh"),
     ValueError, "dense_backward: A_prev must have shape (4, 2); got (5, 2)"),
    ("dense_backward-dW-is-W", lambda bk, a: (lambda W: bk.dense_backward(a(4, 3), a(4, 2), W, None,
                                                                          dW=W))(a(2, 3)),
     ValueError, "dense_backward: dW overlaps W"),
    ("dense_backward-G_prev-is-A_prev",
     lambda bk, a: (lambda A: bk.dense_backward(a(4, 3), A, a(2, 3), "tanh", G_prev=A))(a(4, 2)),
     ValueError, "dense_backward: G_prev overlaps A_prev"),
    ("activation_forward-shifted-in-place",
     lambda bk, a: (lambda H: bk.activation_forward(H[1:], "tanh", out=H[:-1]))(a(5)),
     ValueError, "activation_forward: out overlaps H (only H may be written in place)"),
    ("activation_backward-out-is-A",
     lambda bk, a: (lambda A: bk.activation_backward(a(3, 2), A, "tanh", out=A))(a(3, 2)),
     ValueError, "activation_backward: out overlaps A (only dA may be written in place)"),
    ("activation_backward-shape", lambda bk, a: bk.activation_backward(a(3, 2), a(2, 3), "tanh"),
     ValueError, "activation_backward: A must have shape (3, 2); got (2, 3)"),
    ("colsum-1d", lambda bk, a: bk.colsum(a(4)), ValueError, "colsum: G must be 2-D"),
    ("colsum-out", lambda bk, a: bk.colsum(a(4, 3), out=a(4)), ValueError,
     "colsum: out must have shape (3,); got (4,)"),
    ("dropout-mask", lambda bk, a: bk.dropout(a(4, 3), a(3, 4)), ValueError,
     "dropout: M must have shape (4, 3); got (3, 4)"),
    ("loss-name", lambda bk, a: bk.loss("hinge", a(2, 2), a(2, 2)), ValueError,
     "loss: unknown loss 'hinge'; valid losses: sse, mse, cross_entropy, bce"),
    ("loss-Y", lambda bk, a: bk.loss("mse", a(2, 2), a(2, 3)), ValueError,
     "loss: Y must have shape (2, 2); got (2, 3)"),
    ("loss-G-is-F", lambda bk, a: (lambda F: bk.loss("sse", F, a(2, 2), G=F))(a(2, 2)), ValueError,
     "loss: G overlaps F"),
    ("weight_penalty-l1", lambda bk, a: bk.weight_penalty(a(2, 2), a(2, 2), -1.0, 0.0), ValueError,
     "weight_penalty: l1 must be >= 0.0; got -1.0"),
    ("weight_penalty-dW-is-W", lambda bk, a: (lambda W: bk.weight_penalty(W, W, 0.1, 0.1))(a(2, 2)),
     ValueError, "weight_penalty: dW overlaps W"),
    ("sgd-momentum-1", lambda bk, a: bk.sgd_update(a(3), a(3), a(3), 0.1, 1.0), ValueError,
     "sgd_update: momentum must be < 1.0; got 1.0"),
    ("sgd-no-velocity", lambda bk, a: bk.sgd_update(a(3), a(3), None, 0.1, 0.9), ValueError,
     "sgd_update: momentum = 0.9 needs a velocity array"),
    ("sgd-lr-inf", lambda bk, a: bk.sgd_update(a(3), a(3), None, float("inf")), ValueError,
     "sgd_update: lr must be finite; got inf"),
    ("sgd-param-is-grad", lambda bk, a: (lambda p: bk.sgd_update(p, p, None, 0.1))(a(3)), ValueError,
     "sgd_update: param overlaps grad"),
    ("adam-step-0", lambda bk, a: bk.adam_update(a(3), a(3), a(3), a(3), 1e-3, 0.9, 0.999, 1e-8, 0),
     ValueError, "adam_update: step counts from 1; got 0"),
    ("adam-eps-0", lambda bk, a: bk.adam_update(a(3), a(3), a(3), a(3), 1e-3, 0.9, 0.999, 0.0, 1),
     ValueError, "adam_update: eps must be > 0.0; got 0.0"),
    ("adam-m-is-v", lambda bk, a: (lambda m: bk.adam_update(a(3), a(3), m, m, 1e-3, 0.9, 0.999,
                                                            1e-8, 1))(a(3)),
     ValueError, "adam_update: v overlaps m"),
    ("adam-dtypes", lambda bk, a: bk.adam_update(a(3), a(3, dt=np.float64) if a(1).dtype == np.float32
                                                 else a(3, dt=np.float32), a(3), a(3), 1e-3, 0.9,
                                                 0.999, 1e-8, 1),
     TypeError, "adam_update: param is"),
]


@pytest.mark.parametrize("case", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_call_same_error_on_every_backend(backend, dtype, case):
    _, call, exc, message = case
    bk = get_backend(backend)
    with pytest.raises(exc) as info:
        call(bk, arrays(bk, dtype))
    assert str(info.value).startswith(f"{backend} {message}"), str(info.value)


def test_every_message_is_the_same_on_every_backend_as_on_numpy(backend, dtype):
    """Not only the pinned prefix: the whole message, after the backend's name, is numpy's."""
    bk, ref = get_backend(backend), get_backend("numpy")
    for _, call, exc, _ in BAD_CALLS:
        messages = []
        for b in (bk, ref):
            with pytest.raises(exc) as info:
                call(b, arrays(b, dtype))
            messages.append(str(info.value).split(" ", 1)[1].replace(f"'{b.name}'", "'<backend>'"))
        assert messages[0] == messages[1]


def _good_edge_cases(bk, a):
    """Calls that must work, with numpy's numbers: single rows and columns, in-place outputs."""
    H = a(1, 1)
    yield "activation_forward in place", bk.activation_forward(H, "sigmoid", out=H)
    dA = a(3, 1)
    yield "activation_backward in place", bk.activation_backward(dA, a(3, 1), "tanh", out=dA)
    D = a(1, 4)
    yield "dropout in place", bk.dropout(D, a(1, 4), out=D)
    yield "gemm 1x1x1", bk.gemm(a(1, 1), a(1, 1))
    yield "gemm trans 1 row", bk.gemm(a(1, 5), a(1, 5), trans_b=True)
    yield "dense_forward one sample", bk.dense_forward(a(1, 3), a(3, 1), a(1), "relu")
    dW, db, G_prev = bk.dense_backward(a(1, 1), a(1, 1), a(1, 1), "leaky_relu")
    yield "dense_backward one of everything", (dW, db, G_prev)
    dW, db, none = bk.dense_backward(a(2, 3), a(2, 1), a(1, 3), None, need_G_prev=False)
    assert none is None
    yield "dense_backward no G_prev", (dW, db)
    yield "colsum one row", bk.colsum(a(1, 4))
    value, G = bk.loss("cross_entropy", a(1, 1), bk.asarray(np.ones((1, 1)), a(1).dtype))
    yield "cross_entropy one class", (float(value), G)


def test_good_edge_cases_give_numpys_numbers(backend, dtype):
    bk, ref = get_backend(backend), get_backend("numpy")
    got = list(_good_edge_cases(bk, arrays(bk, dtype)))
    expected = list(_good_edge_cases(ref, arrays(ref, dtype)))
    for (what, g), (_, e) in zip(got, expected):
        g = g if isinstance(g, tuple) else (g,)
        e = e if isinstance(e, tuple) else (e,)
        for gi, ei in zip(g, e):
            gi = gi if isinstance(gi, float) else bk.to_numpy(gi)
            assert_close(gi, ei, dtype, scale=1.0, what=what)
