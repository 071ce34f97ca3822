"""Checkpoints: a run killed with SIGKILL and resumed ends bit for bit where an uninterrupted
run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import backprop as bp
from backprop import checkpoint as ckpt

EPOCHS = 400

SCRIPT = """
import sys, time
import numpy as np
import backprop as bp
backend, dropout, ckpt, resume, out, slow = sys.argv[1:7]
rng = np.random.default_rng(0)
X = rng.normal(size=(96, 4))
Y = np.sin(X @ rng.normal(size=(4, 2)))
net = bp.MLP([4, 16, 16, 2], backend=backend, seed=0)
def schedule(epoch):
    time.sleep(float(slow))
    return 1e-3 * 0.999 ** epoch
net.fit(X, Y, optimizer="adam", epochs=%d, batch_size=16, seed=1, dropout=float(dropout),
        lr_schedule=schedule, validation_data=(X[:20], Y[:20]), standardize=True,
        checkpoint=None if ckpt == "-" else ckpt, checkpoint_every=1,
        resume=None if resume == "-" else resume)
np.savez(out, *net.weights, *net.biases)
""" % EPOCHS

CASES = [("numpy", "0.1")] + ([("cpu", "0")] if "cpu" in bp.available_backends() else [])


def _run(script, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env)


@pytest.mark.parametrize("backend,dropout", CASES)
def test_sigkill_then_resume_is_bit_identical(tmp_path, backend, dropout):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    path = tmp_path / "run.npz"
    killed = _run(script, backend, dropout, path, "-", tmp_path / "unused.npz", 0.005)
    deadline = time.time() + 120
    epoch = -1
    while time.time() < deadline and killed.poll() is None:
        if path.exists():
            epoch = ckpt.load(path)[0]["epoch"]
            if epoch >= 30:
                break
        time.sleep(0.02)
    assert killed.poll() is None, "the run finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    header, _ = ckpt.load(path)
    assert 30 <= header["epoch"] < EPOCHS - 1
    resumed = _run(script, backend, dropout, path, path, tmp_path / "resumed.npz", 0)
    straight = _run(script, backend, dropout, "-", "-", tmp_path / "straight.npz", 0)
    assert resumed.wait() == 0 and straight.wait() == 0
    a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "straight.npz")
    for key in a.files:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert ckpt.load(path)[0]["epoch"] == EPOCHS - 1


def test_checkpoint_contents_and_errors(tmp_path):
    X = np.random.default_rng(0).normal(size=(30, 2))
    net = bp.MLP([2, 4, 1], backend="numpy", seed=0)
    path = tmp_path / "c.npz"
    history = net.fit(X, X[:, :1], epochs=5, batch_size=8, checkpoint=path, checkpoint_every=2)
    header, arrays = ckpt.load(path)
    assert header["epoch"] == 4 and header["step"] == 5 * 4
    assert header["history"]["loss"] == history.loss
    assert {"slot0_m", "slot0_v", "W0", "b1"} <= set(arrays)
    with pytest.raises(ValueError, match="layers"):
        bp.MLP([2, 3, 1], backend="numpy").fit(X, X[:, :1], epochs=6, resume=path)
    with pytest.raises(FileNotFoundError):
        net.fit(X, X[:, :1], epochs=6, resume=tmp_path / "none.npz")
    with pytest.raises(ValueError, match="checkpoint_every"):
        net.fit(X, X[:, :1], epochs=6, checkpoint=path, checkpoint_every=0)
    json.dumps(header)
