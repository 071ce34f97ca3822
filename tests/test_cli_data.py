"""`backprop train`, `backprop predict`, `backprop --version`, and the bad CSV files."""

import csv
import io
import sys

import numpy as np
import pytest

import backprop as bp
from backprop import cli


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    rows = [[a, b, a - 2 * b, "up" if a > 0 else "down"] for a, b in X]
    return _write(tmp_path / "d.csv", ["a", "b", "y", "kind"], rows)


def _run(capsys, *argv):
    status = cli.main(list(argv))
    return status, capsys.readouterr()


def _error(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("backprop: error: ") and "\n" not in err
    return err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"backprop {bp.__version__}"


def test_train_and_predict_regression(tmp_path, data, capsys):
    model = str(tmp_path / "m.npz")
    status, out = _run(capsys, "train", data, "--target", "y", "--features", "a,b",
                       "--layers", "8", "--epochs", "300", "--lr", "0.01", "--backend", "numpy",
                       "--val-fraction", "0.2", "--out", model, "--no-progress")
    assert status == 0 and "regressing y" in out.out and "wrote" in out.out
    status, out = _run(capsys, "predict", model, data)
    lines = out.out.strip().splitlines()
    assert lines[0] == "y" and len(lines) == 121
    pred = np.array([float(v) for v in lines[1:]])
    with open(data) as f:
        truth = np.array([float(r["y"]) for r in csv.DictReader(f)])
    assert np.mean((pred - truth) ** 2) < 0.1 * np.var(truth)
    _error(capsys, "predict", model, data, "--proba")


def test_train_and_predict_text_classes(tmp_path, data, capsys):
    model = str(tmp_path / "m.npz")
    status, out = _run(capsys, "train", data, "--target", "kind", "--features", "a,b",
                       "--layers", "8", "--epochs", "200", "--lr", "0.01", "--backend", "numpy",
                       "--out", model, "--no-progress")
    assert status == 0 and "classifying kind" in out.out
    _, out = _run(capsys, "predict", model, data)
    rows = list(csv.reader(io.StringIO(out.out)))
    assert rows[0] == ["kind"] and {r[0] for r in rows[1:]} <= {"up", "down"}
    with open(data) as f:
        truth = [r["kind"] for r in csv.DictReader(f)]
    assert np.mean([r[0] == t for r, t in zip(rows[1:], truth)]) > 0.9
    _, out = _run(capsys, "predict", model, data, "--proba")
    rows = list(csv.reader(io.StringIO(out.out)))
    assert rows[0] == ["p(down)", "p(up)"]
    np.testing.assert_allclose(np.array(rows[1:], float).sum(1), 1)


def test_bad_csv_files(tmp_path, data, capsys):
    out = str(tmp_path / "m.npz")
    common = ["--target", "y", "--out", out, "--no-progress", "--backend", "numpy"]
    assert "no such file" in _error(capsys, "train", str(tmp_path / "missing.csv"), *common)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is empty" in _error(capsys, "train", str(empty), *common)
    header_only = _write(tmp_path / "h.csv", ["a", "y"], [])
    assert "no data rows" in _error(capsys, "train", header_only, *common)
    ragged = _write(tmp_path / "r.csv", ["a", "y"], [[1, 2], [3, 4, 5]])
    assert "line 3 has 3 cells" in _error(capsys, "train", ragged, *common)
    bad = _write(tmp_path / "b.csv", ["a", "b", "y"], [[1, 2, 3], [4, "x7", 6]])
    err = _error(capsys, "train", bad, *common)
    assert "line 3, column 'b'" in err and "'x7'" in err
    assert "unknown target column 'z'" in _error(capsys, "train", data, "--target", "z",
                                                 "--out", out)
    nan = _write(tmp_path / "n.csv", ["a", "y"], [[1, 2], ["nan", 3]])
    assert "line 3, column 'a'" in _error(capsys, "train", nan, *common)
    assert "no such file" in _error(capsys, "predict", str(tmp_path / "nope.npz"), data)
    err = _error(capsys, "train", data, "--target", "y", "kind", "--out", out)
    assert "column 'kind'" in err and "a classifier's target is one column" in err


def test_train_plot(tmp_path, data, capsys):
    pytest.importorskip("matplotlib")
    argv = ["train", data, "--target", "y", "--features", "a,b", "--epochs", "3", "--backend",
            "numpy", "--no-progress", "--out", str(tmp_path / "m.npz"), "--plot",
            str(tmp_path / "loss.png")]
    assert cli.main(argv) == 0
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_train_plot_without_matplotlib(tmp_path, data, capsys, monkeypatch):
    """Refused before training, with an install command that works from a checkout (the
    package index's "backprop" is another project)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    err = _error(capsys, "train", data, "--target", "y", "--features", "a,b", "--epochs", "3",
                 "--backend", "numpy", "--no-progress", "--out", str(tmp_path / "m.npz"),
                 "--plot", str(tmp_path / "loss.png"))
    assert err.startswith("backprop: error: --plot: plotting needs matplotlib: pip install "
                          "matplotlib")
    assert "backprop[" not in err
    assert not (tmp_path / "m.npz").exists()
