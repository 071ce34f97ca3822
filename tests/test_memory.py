"""No leaks: 10,000 training steps leave the process's resident memory flat."""

import gc
import os

import numpy as np
import pytest

import backprop as bp
from backprop.backends import why_unavailable


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("backend,fused", [("numpy", None), ("cpu", True), ("cpu", False)])
def test_ten_thousand_steps_do_not_grow_memory(backend, fused):
    if why_unavailable(backend):
        pytest.skip(why_unavailable(backend))
    rng = np.random.default_rng(0)
    net = bp.MLP([4, 16, 16, 2], backend=backend, seed=0)
    trainer = bp.Trainer(net, "mse", bp.optim.Adam(lr=1e-3), l2=1e-4, fused=fused)
    X = net.input_array(rng.normal(size=(32, 4)))
    Y = net.target_array(rng.normal(size=(32, 2)), 32, "mse")
    X_odd, Y_odd = X[:7].copy(), Y[:7].copy()  # a second batch size: scratch is reused, not regrown
    for _ in range(500):  # warm up: workspaces, scratch buffers, allocator pools
        trainer.step(X, Y)
        trainer.step(X_odd, Y_odd)
    gc.collect()
    before = rss_bytes()
    for _ in range(5000):
        trainer.step(X, Y)
        trainer.step(X_odd, Y_odd)
    for _ in range(50):  # each fit builds (and drops) its own trainer, native or not
        net.fit(rng.normal(size=(64, 4)), rng.normal(size=(64, 2)), epochs=2, batch_size=16,
                fused=fused)
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 2 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over 10,000 steps"
