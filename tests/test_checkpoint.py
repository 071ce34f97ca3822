"""Checkpoints: a run killed with SIGKILL and resumed ends bit for bit where an uninterrupted
run ends."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import backprop as bp
from backprop import checkpoint as ckpt
from backprop import model_file

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


# ---- damaged and foreign checkpoints: a ValueError naming the file, before anything changes ----

def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    return X, np.sin(X[:, :1])


def _good(tmp_path):
    """A checkpoint with everything: standardizer, Adam's slots, an early-stopping best with
    its parameters; its header (a dict) and arrays."""
    X, Y = _data()
    net = bp.MLP([2, 4, 1], backend="numpy", seed=0)
    path = tmp_path / "good.npz"
    net.fit(X, Y, epochs=4, batch_size=8, standardize=True, validation_data=(X[:9], Y[:9]),
            early_stopping=3, seed=2, checkpoint=path)
    header, arrays = ckpt.load(path)
    assert header["best"]["params"] and "best_W0" in arrays and "standardizer_mean" in arrays
    return path, header, arrays


def _write(path, header, arrays):
    np.savez(path, header=np.array(json.dumps(header)), **arrays)
    return path


def _damaged_files(tmp_path, good_path, header, arrays):
    """(name, path, what the error must say) for every kind of damage."""
    raw = good_path.read_bytes()
    out = []
    p = tmp_path / "truncated.npz"
    p.write_bytes(raw[:len(raw) // 2])
    out.append(("truncated", p, "not a readable .npz"))
    p = tmp_path / "random.npz"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out.append(("random bytes", p, "not a backprop checkpoint"))
    p = tmp_path / "flipped.npz"  # a byte of W0's data changed: the CRC check fails on reading
    with zipfile.ZipFile(good_path) as zf:
        info = zf.getinfo("W0.npy")
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 128 + 4
    flipped = bytearray(raw)
    flipped[at] ^= 0xFF
    p.write_bytes(bytes(flipped))
    out.append(("flipped byte", p, "damaged backprop checkpoint.*CRC"))
    out.append(("zip without header", _write_plain(tmp_path / "noheader.npz", arrays),
                "not a backprop checkpoint \\(no header\\)"))
    for key in ("step", "order_rng", "history"):
        h = {k: v for k, v in header.items() if k != key}
        out.append((f"no {key}", _write(tmp_path / f"no_{key}.npz", h, arrays),
                    f"damaged backprop checkpoint \\(missing '{key}' in the header\\)"))
    out.append(("header a list", _write_header(tmp_path / "list.npz", [1, 2], arrays),
                "not a backprop checkpoint \\(unreadable header\\)"))
    out.append(("history not a dict", _write(tmp_path / "hist.npz", dict(header, history=None),
                                             arrays), "history must hold"))
    out.append(("history too short", _write(tmp_path / "short.npz", dict(
        header, history=dict(header["history"], loss=header["history"]["loss"][:-1])), arrays),
        "history.loss must be a list of 4 numbers"))
    out.append(("bad generator state", _write(tmp_path / "rng.npz", dict(
        header, dropout_rng={"bit_generator": "PCG64", "state": 3}), arrays),
        "dropout_rng is not a PCG64 state"))
    out.append(("best not a dict", _write(tmp_path / "best.npz", dict(header, best=[1]), arrays),
                "best must be null"))
    out.append(("step a string", _write(tmp_path / "step.npz", dict(header, step="7"), arrays),
                "step must be an integer"))
    out.append(("wrong-shaped slot", _write(tmp_path / "slot.npz", header, dict(
        arrays, slot0_m=np.zeros((4, 2)))), r"slot0_m has shape \(4, 2\); .* need \(2, 4\)"))
    out.append(("missing slot", _write(tmp_path / "noslot.npz", header, {
        k: v for k, v in arrays.items() if k != "slot3_v"}), "missing 'slot3_v'"))
    out.append(("missing best parameters", _write(tmp_path / "nobest.npz", header, {
        k: v for k, v in arrays.items() if k != "best_b1"}), "missing 'best_b1'"))
    out.append(("NaN in a slot", _write(tmp_path / "nan.npz", header, dict(
        arrays, slot1_v=np.full(4, np.nan, np.float32))), "slot1_v .*NaN"))
    out.append(("text array", _write(tmp_path / "text.npz", header, dict(
        arrays, b0=np.array(["a", "b", "c", "d"]))), "b0 has dtype"))
    out.append(("standardizer scale 0", _write(tmp_path / "scale.npz", header, dict(
        arrays, standardizer_scale=np.zeros(2))), "scale must be > 0"))
    out.append(("unexpected member", _write(tmp_path / "extra.npz", header, dict(
        arrays, junk=np.zeros(3))), "unexpected member 'junk.npy'"))
    model = tmp_path / "model.npz"
    bp.MLP([2, 4, 1], seed=0).save(model)
    out.append(("a model file", model, r"is a model file \(MLP.save\), not a checkpoint"))
    other = tmp_path / "other.npz"
    X, Y = _data()
    bp.MLP([2, 3, 1], backend="numpy", seed=0).fit(X, Y, epochs=2, checkpoint=other)
    out.append(("another architecture", other, r"is for layers \[2, 3, 1\], the model has "
                                                r"\[2, 4, 1\]"))
    sgd = tmp_path / "sgd.npz"
    bp.MLP([2, 4, 1], backend="numpy", seed=0).fit(X, Y, epochs=2, optimizer="sgd",
                                                   batch_size=8, checkpoint=sgd)
    out.append(("another optimizer", sgd, "written with optimizer 'SGD'"))
    return out


def _write_plain(path, arrays):
    np.savez(path, **arrays)
    return path


def _write_header(path, header, arrays):
    np.savez(path, header=np.array(json.dumps(header)), **arrays)
    return path


DAMAGE = ["truncated", "random bytes", "flipped byte", "zip without header", "no step",
          "no order_rng", "no history", "header a list", "history not a dict",
          "history too short", "bad generator state", "best not a dict", "step a string",
          "wrong-shaped slot", "missing slot", "missing best parameters", "NaN in a slot",
          "text array", "standardizer scale 0", "unexpected member", "a model file",
          "another architecture", "another optimizer"]


@pytest.fixture(scope="module")
def damaged_files(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("damaged")
    good_path, header, arrays = _good(tmp_path)
    cases = {name: (path, what) for name, path, what in
             _damaged_files(tmp_path, good_path, header, arrays)}
    assert sorted(cases) == sorted(DAMAGE)
    return good_path, header, cases


@pytest.mark.parametrize("name", DAMAGE)
def test_damaged_checkpoints_raise_value_errors_before_anything_changes(damaged_files, name):
    path, what = damaged_files[2][name]
    X, Y = _data()
    # fit: the model (parameters, standardizer) as it was
    net = bp.MLP([2, 4, 1], backend="numpy", seed=7)
    before = net.weights + net.biases
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + what):
        net.fit(X, Y, epochs=6, batch_size=8, standardize=True, early_stopping=3,
                validation_data=(X[:9], Y[:9]), seed=2, resume=path)
    for a, b in zip(before, net.weights + net.biases):
        assert a.tobytes() == b.tobytes()
    assert net.standardizer is None
    # restore: the optimizer's state, the generators and the History as they were
    trainer = bp.Trainer(net, "mse", "adam", seed=3)
    order_rng = np.random.default_rng(4)
    history = bp.History(loss=[9.0], lr=[1.0])
    states = (order_rng.bit_generator.state, trainer.rng.bit_generator.state)
    for slots in trainer.state.slots:
        for value in slots.values():
            value[...] = 0.5
    with pytest.raises(ValueError, match=re.escape(str(path))):
        ckpt.restore(path, net, trainer, order_rng, history)
    assert (order_rng.bit_generator.state, trainer.rng.bit_generator.state) == states
    assert trainer.state.step == 0 and trainer.optimizer.lr == 1e-3
    assert all((value == 0.5).all() for slots in trainer.state.slots for value in slots.values())
    assert history.loss == [9.0] and history.lr == [1.0] and history.val_loss == []
    for a, b in zip(before, net.weights + net.biases):
        assert a.tobytes() == b.tobytes()


def test_the_undamaged_checkpoint_resumes(damaged_files):
    good_path, header, _ = damaged_files
    X, Y = _data()
    net = bp.MLP([2, 4, 1], backend="numpy", seed=7)
    history = net.fit(X, Y, epochs=6, batch_size=8, standardize=True, early_stopping=3,
                      validation_data=(X[:9], Y[:9]), seed=2, resume=good_path)
    assert len(history.loss) == 6 and history.loss[:4] == header["history"]["loss"]
    assert net.standardizer is not None


# ---- the checkpoint's folder is checked before training ---------------------------------

@pytest.mark.parametrize("where", ["missing folder", "folder is a file", "target is a folder",
                                   "read-only folder"])
def test_unwritable_checkpoint_path_fails_before_training(tmp_path, where):
    X, Y = _data()
    if where == "missing folder":
        path, what = tmp_path / "nodir" / "run.npz", "does not exist"
    elif where == "folder is a file":
        (tmp_path / "afile").write_text("x")
        path, what = tmp_path / "afile" / "run.npz", "Not a directory"
    elif where == "target is a folder":
        path, what = tmp_path / "run.npz", "Is a folder"
        path.mkdir()
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        (tmp_path / "ro").mkdir()
        os.chmod(tmp_path / "ro", 0o555)
        path, what = tmp_path / "ro" / "run.npz", "Permission denied"
    net = bp.MLP([2, 4, 1], backend="numpy", seed=0)
    before = net.weights
    seen = []

    def schedule(epoch):  # called from epoch 1 on only once training runs
        seen.append(epoch)
        return 1e-3
    with pytest.raises(OSError, match=re.escape(f"cannot write the checkpoint {path}") + ".*"
                       + what) as info:
        net.fit(X, Y, epochs=3, checkpoint=path, lr_schedule=schedule)
    assert ".backprop" not in str(info.value)  # no temporary file named
    assert seen == [0]  # only fit's check of the first lr: no epoch ran
    for a, b in zip(before, net.weights):
        assert a.tobytes() == b.tobytes()
    assert list(tmp_path.rglob(".*")) == []  # the probe left nothing


# ---- stale temporary files of a killed write are removed by the next write ------------

KILLED_WRITE = """
import sys, time
import numpy as np
from backprop import model_file
def stall(file, **arrays):  # writes a little, then hangs: killed mid-write
    file.write(b"PK partial")
    file.flush()
    print("writing", flush=True)
    time.sleep(600)
model_file.np.savez = stall
model_file.write_npz_atomically(sys.argv[1], {"a": np.zeros(3)})
"""


def test_a_killed_writes_temporary_file_is_removed_by_the_next_write(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_WRITE)
    target = tmp_path / "run.npz"
    X, Y = _data()
    net = bp.MLP([2, 4, 1], backend="numpy", seed=0)
    net.fit(X, Y, epochs=2, checkpoint=target)
    good = target.read_bytes()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script), str(target)], env=env,
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(left) == 1 and target.read_bytes() == good  # the previous checkpoint intact
    # files that are not stale stay: another target's, a fresh one, a locked one
    other = tmp_path / f".other.npz.{'0' * 16}.backprop-tmp"
    other.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(other, (old, old))
    os.utime(left[0], (old, old))  # the killed write's file, an hour old
    net.fit(X, Y, epochs=1, checkpoint=target)
    assert not left[0].exists()
    assert other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [other.name]
    assert ckpt.load(target)[0]["epoch"] == 0


def test_only_stale_unlocked_temporary_files_of_the_target_are_removed(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    target = tmp_path / "run.npz"
    old = time.time() - 3600

    def temp(hexdigits, age_old=True, name="run.npz"):
        p = tmp_path / f".{name}.{hexdigits}.backprop-tmp"
        p.write_bytes(b"x")
        if age_old:
            os.utime(p, (old, old))
        return p
    stale = temp("1" * 16)
    fresh = temp("2" * 16, age_old=False)  # a write in progress, just begun
    locked = temp("3" * 16)  # a write in progress that has written nothing for an hour
    other = temp("4" * 16, name="run.npz.x")  # another target's
    longer = temp("5" * 16 + ".x")  # not a temporary file's name
    with open(locked, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        removed = model_file.remove_stale_temps(target)
    assert removed == [str(stale)]
    assert not stale.exists() and fresh.exists() and locked.exists() and other.exists()
    assert longer.exists()


def test_checkpoints_have_the_mode_of_a_new_file_under_the_umask(tmp_path):
    X, Y = _data()
    net = bp.MLP([2, 4, 1], backend="numpy", seed=0)
    previous = os.umask(0o022)
    try:
        for umask in (0o022, 0o077, 0o002):
            os.umask(umask)
            path = tmp_path / f"run{umask:o}.npz"
            net.fit(X, Y, epochs=1, checkpoint=path)
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(previous)
