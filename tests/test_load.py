"""MLP.load checks a file before it allocates: declared layers against the members' .npy
headers, only the members a model file has, clear messages for foreign files."""

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

import backprop as bp


def saved(tmp_path, layers=(1, 10, 1), standardize=False):
    net = bp.MLP(list(layers), seed=0)
    if standardize:
        net.standardizer = bp.Standardizer().fit(np.random.default_rng(0).normal(size=(9, layers[0])))
    path = tmp_path / "model.npz"
    net.save(path)
    with np.load(path) as data:
        return net, path, {k: data[k] for k in data.files}


def write(path, arrays, compress=False):
    (np.savez_compressed if compress else np.savez)(path, **arrays)
    return path


def with_header(arrays, **changes):
    header = json.loads(str(arrays["header"]))
    header.update(changes)
    return dict(arrays, header=np.array(json.dumps(header)))


def peak_bytes(call):
    """The peak of traced allocations (numpy's array data included) while ``call`` runs."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_huge_declared_layers_fail_before_any_allocation(tmp_path):
    _, _, arrays = saved(tmp_path)
    path = write(tmp_path / "huge.npz", with_header(arrays, layers=[1, 10**7, 1]))
    assert path.stat().st_size < 4096

    def load():
        with pytest.raises(ValueError, match=r"W0 has shape \(1, 10\) in the file, but the "
                                             r"header's layers \[1, 10000000, 1\] need \(1, 10000000\)"):
            bp.MLP.load(path)
    assert peak_bytes(load) < 2 * 2**20  # the model would take 240 MB


def test_arrays_beyond_the_bound_are_refused_unread(tmp_path, monkeypatch):
    import backprop.model_file as model_file
    _, _, arrays = saved(tmp_path)
    monkeypatch.setattr(model_file, "MAX_ARRAY_ELEMENTS", 5)
    with pytest.raises(ValueError, match=r"W0 would have shape \(1, 10\), more than 5 entries"):
        bp.MLP.load(write(tmp_path / "m.npz", arrays))


def test_unused_members_are_rejected_without_decompressing(tmp_path):
    _, _, arrays = saved(tmp_path)
    bomb = dict(arrays, junk=np.zeros(10**7))  # 80 MB of zeros, 80 kB compressed
    path = write(tmp_path / "bomb.npz", bomb, compress=True)
    assert path.stat().st_size < 2**20

    def load():
        with pytest.raises(ValueError, match="unexpected member 'junk.npy'"):
            bp.MLP.load(path)
    assert peak_bytes(load) < 2 * 2**20


def test_member_size_must_match_its_npy_header(tmp_path):
    _, _, arrays = saved(tmp_path)
    good = tmp_path / "good.npz"
    write(good, arrays)
    buf = io.BytesIO()
    np.save(buf, arrays["W0"])
    header_only = buf.getvalue()[:-8]  # one float64 short (the file's W0 is float32: 40 bytes)
    bad = tmp_path / "short.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = header_only if info.filename == "W0.npy" else src.read(info)
            dst.writestr(info.filename, data)
    with pytest.raises(ValueError, match="damaged.*W0.*bytes of data"):
        bp.MLP.load(bad)


def test_foreign_files_get_clear_messages(tmp_path):
    net, path, arrays = saved(tmp_path, layers=(2, 3, 1), standardize=True)
    npy = tmp_path / "weights.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match=r"\.npy file \(one array\), not a backprop model file"):
        bp.MLP.load(npy)
    no_scale = {k: v for k, v in arrays.items() if k != "standardizer_scale"}
    with pytest.raises(ValueError, match="damaged.*standardizer_mean without standardizer_scale"):
        bp.MLP.load(write(tmp_path / "no_scale.npz", no_scale))
    with pytest.raises(ValueError, match=r"damaged.*unknown activation None; valid activations"):
        bp.MLP.load(write(tmp_path / "none.npz", with_header(arrays, activation=None)))
    with pytest.raises(ValueError, match="damaged.*missing 'init' in the header"):
        header = json.loads(str(arrays["header"]))
        del header["init"]
        bp.MLP.load(write(tmp_path / "noinit.npz", dict(arrays, header=np.array(json.dumps(header)))))
    with pytest.raises(ValueError, match=r"damaged.*standardizer_mean has shape \(3,\)"):
        bp.MLP.load(write(tmp_path / "mean.npz", dict(arrays, standardizer_mean=np.zeros(3))))
    with pytest.raises(ValueError, match="damaged.*W1 has dtype"):
        bp.MLP.load(write(tmp_path / "text.npz", dict(arrays, W1=np.array([["a"], ["b"], ["c"]]))))
    with pytest.raises(ValueError, match="not a backprop model file"):
        bp.MLP.load(write(tmp_path / "big_header.npz", dict(arrays, header=np.zeros(3))))
    with pytest.raises(ValueError, match="not a backprop model file"):
        bp.MLP.load(tmp_path)  # a directory
    # the file itself still loads, standardizer and all
    loaded = bp.MLP.load(path)
    X = np.random.default_rng(1).normal(size=(4, 2))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
