"""MLP.load checks a file before it allocates: declared layers against the members' .npy
headers, only the members a model file has, clear messages for foreign files."""

import io
import json
import os
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


def _deflated_zeros(path, arrays, name, shape, dtype="<f8"):
    """A model file whose member ``name`` holds zeros of ``shape``, deflated, written in chunks
    (the test never holds the array)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.save(buf, value)
            zf.writestr(key + ".npy", buf.getvalue())
        with zf.open(name + ".npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": dtype, "fortran_order": False, "shape": shape})
            left = int(np.prod(shape)) * np.dtype(dtype).itemsize
            chunk = bytes(2**20)
            while left:
                member.write(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
    return path


def test_a_small_file_cannot_declare_a_huge_model(tmp_path):
    """Deflate expands zeros about 1000 times: 64 kB that declare 64 MB are refused unread."""
    layers = [1, 2048, 4096, 1]
    net = bp.MLP(layers, seed=0)
    path = tmp_path / "model.npz"
    net.save(path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "W1"}
    bomb = _deflated_zeros(tmp_path / "bomb.npz", arrays, "W1", (2048, 4096))
    size = bomb.stat().st_size
    assert size < 2**20  # W1 alone declares 64 MiB

    def load():
        with pytest.raises(ValueError, match=rf"damaged.*declare \d+ bytes uncompressed from a "
                                             rf"file of {size} bytes.*MAX_EXPANSION"):
            bp.MLP.load(bomb)
    assert peak_bytes(load) < 2 * 2**20
    # the same model deflated whole (random weights compress little) loads
    with np.load(path) as data:
        compressed = write(tmp_path / "compressed.npz", {k: data[k] for k in data.files},
                           compress=True)
    np.testing.assert_array_equal(bp.MLP.load(compressed).weights[1], net.weights[1])


def test_the_total_declared_size_is_bounded(tmp_path, monkeypatch):
    import backprop.model_file as model_file
    _, path, arrays = saved(tmp_path, layers=(3, 10, 1))
    monkeypatch.setattr(model_file, "MAX_MODEL_BYTES", 200)  # the arrays hold 220 bytes
    with pytest.raises(ValueError, match=r"damaged.*arrays declare \d+ bytes together, more "
                                         r"than the limit of 200 .*MAX_MODEL_BYTES"):
        bp.MLP.load(path)


def test_members_cannot_claim_more_data_than_the_file_holds(tmp_path):
    """A stored member whose zip record claims 32 MiB the file does not hold is refused before
    the array is allocated (reading it would fail only after)."""
    layers = [1, 4096, 1024, 1]
    net = bp.MLP(layers, seed=0)
    path = tmp_path / "model.npz"
    net.save(path)
    W1 = bp.MLP(layers, dtype="float64", seed=0).weights[1]
    buf = io.BytesIO()
    np.save(buf, W1)
    full = len(buf.getvalue())
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, buf.getvalue()[:4096] if info.filename == "W1.npy"
                         else src.read(info))
    data = bytearray(bad.read_bytes())
    for i in (i for i in range(len(data)) if data.startswith(b"PK\x01\x02", i)):
        n = int.from_bytes(data[i + 28:i + 30], "little")
        if data[i + 46:i + 46 + n] == b"W1.npy":  # compressed and uncompressed sizes
            data[i + 20:i + 28] = full.to_bytes(4, "little") * 2
    bad.write_bytes(bytes(data))
    assert bad.stat().st_size < 2**20

    def load():
        with pytest.raises(ValueError, match=r"damaged.*W1.npy claims \d+ bytes at offset "
                                             r"\d+, past the end of the file"):
            bp.MLP.load(bad)
    assert peak_bytes(load) < 2 * 2**20  # W1 would take 32 MiB


def test_saved_models_have_the_mode_of_a_new_file_under_the_umask(tmp_path):
    net = bp.MLP([2, 3, 1], seed=0)
    previous = os.umask(0o022)
    try:
        for umask in (0o022, 0o077, 0o002):
            os.umask(umask)
            path = tmp_path / f"model{umask:o}.npz"
            net.save(path)
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask
            net.save(path)  # written again: a new file under the umask again
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(previous)
