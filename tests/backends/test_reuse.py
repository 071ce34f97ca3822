"""The host buffer pool behind taylor_forward's saved streams: a buffer is handed out again only
when no array refers to it, and the arrays it hands out are what was asked for."""

import numpy as np

from backprop.backends.reuse import BufferPool


def test_views_have_the_shapes_and_dtype_asked_for_and_do_not_overlap():
    pool = BufferPool()
    a, b, c = pool.views([(2, 3, 4), (5,), (1, 7)], np.float32)
    assert [x.shape for x in (a, b, c)] == [(2, 3, 4), (5,), (1, 7)]
    assert all(x.dtype == np.float32 and x.flags.c_contiguous for x in (a, b, c))
    a[...], b[...], c[...] = 1, 2, 3
    assert (a == 1).all() and (b == 2).all() and (c == 3).all()


def test_a_buffer_is_reused_once_nothing_refers_to_it():
    pool = BufferPool()
    a, = pool.views([(100, 10)], np.float64)
    address = a.__array_interface__["data"][0]
    del a
    b, = pool.views([(100, 10)], np.float64)
    assert b.__array_interface__["data"][0] == address


def test_a_buffer_still_referred_to_is_not_handed_out():
    pool = BufferPool()
    a, = pool.views([(100, 10)], np.float64)
    row = a[3]  # a view of a view still holds the buffer
    del a
    row[...] = 7.0
    b, = pool.views([(100, 10)], np.float64)
    b[...] = -1.0
    assert (row == 7.0).all()
    assert not np.shares_memory(row, b)


def test_the_pool_keeps_at_most_keep_buffers():
    pool = BufferPool(keep=2)
    held = [pool.views([(10 + k,)], np.float64) for k in range(5)]
    assert len(pool._buffers) == 2
    assert sum(len(h) for h in held) == 5


def test_taylor_forward_results_survive_the_next_call(backend):
    """The saved streams of one call are not overwritten by the next while they are held."""
    import backprop as bp
    net = bp.MLP([2, 8, 1], activation="tanh", backend=backend, dtype="float64", seed=0)
    be = net.backend
    X = be.asarray(np.random.default_rng(0).normal(size=(50, 2)), np.float64)
    params = net.parameters()
    Ws, bs = [p.value for p in params[0::2]], [p.value for p in params[1::2]]
    F1, dF1, _, saved1 = be.taylor_forward(X, Ws, bs, net.layer_activations, (0,), ())
    keep = be.to_numpy(F1).copy(), be.to_numpy(dF1).copy()
    be.taylor_forward(X + 1.0, Ws, bs, net.layer_activations, (0,), ())
    np.testing.assert_array_equal(be.to_numpy(F1), keep[0])
    np.testing.assert_array_equal(be.to_numpy(dF1), keep[1])


def test_a_pool_pickles_and_copies_as_an_empty_pool():
    import copy
    import pickle
    pool = BufferPool(keep=3)
    held = pool.views([(1000,)], np.float64)
    for other in (pickle.loads(pickle.dumps(pool)), copy.deepcopy(pool)):
        assert isinstance(other, BufferPool) and other.keep == 3 and other._buffers == []
    assert len(held) == 1


def test_a_model_pickles_after_taylor_forward(backend):
    """The backend a model carries holds a pool once taylor_forward has run; pickling the model
    must not try to pickle the pool's lock or its buffers."""
    import pickle

    import backprop as bp
    net = bp.MLP([2, 5, 1], activation="tanh", backend=backend, dtype="float64", seed=0)
    X = np.random.default_rng(0).normal(size=(30, 2))
    net.derivatives(X, first=(0,))
    copy = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(copy.predict(X), net.predict(X))


def test_views_start_on_cache_lines():
    """Each view starts on a 64-byte boundary (the cpu Taylor kernels stream whole cache lines)."""
    pool = BufferPool()
    for dtype in (np.float32, np.float64):
        views = pool.views([(3, 5), (7,), (2, 2, 3)], dtype)
        assert all(v.ctypes.data % 64 == 0 for v in views)
        for v, fill in zip(views, (1, 2, 3)):
            v[...] = fill
        assert [float(v.min()) for v in views] == [1, 2, 3] and [float(v.max()) for v in views] == [1, 2, 3]
