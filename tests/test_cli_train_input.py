"""`backprop train` and `predict` on bad cells, bad options and oversized models: one line
`backprop: error: ...`, exit status 2, before any training."""

import csv
import io
import os
import warnings

import numpy as np
import pytest

from backprop import cli, cli_data, csv_table
from tests.test_cli_data import _error, _run, _write


def _refuse(*args, **kwargs):
    raise AssertionError("the command went on although its input was wrong")


@pytest.fixture
def rows():
    rng = np.random.default_rng(0)
    return [[f"{a:.6f}", f"{b:.6f}", f"{a - 2 * b:.6f}"] for a, b in rng.normal(size=(40, 2))]


def _csv(tmp_path, rows, edits=(), header=("a", "b", "y")):
    """The rows with ``edits`` (row, column, cell) applied, written as tmp_path/d.csv."""
    rows = [list(r) for r in rows]
    for i, j, cell in edits:
        rows[i][j] = cell
    return _write(tmp_path / "d.csv", list(header), rows)


def _train(tmp_path, data, *options):
    return ["train", data, "--out", str(tmp_path / "m.npz"), "--no-progress", "--backend",
            "numpy", "--epochs", "2", *options]


@pytest.mark.parametrize("loss", [[], ["--loss", "mse"]])
@pytest.mark.parametrize("cell", ["", "nan", "inf", "-Infinity"])
def test_a_bad_cell_in_a_numeric_target_is_an_error_not_classes(tmp_path, rows, capsys, loss,
                                                                cell, monkeypatch):
    data = _csv(tmp_path, rows, [(4, 2, cell)])
    monkeypatch.setattr(cli_data.MLP, "fit", _refuse)
    err = _error(capsys, *_train(tmp_path, data, "--target", "y", *loss))
    assert f"line 6, column 'y': {cell!r} is" in err
    assert not (tmp_path / "m.npz").exists()


def test_text_in_a_numeric_target_names_both_cells(tmp_path, rows, capsys):
    data = _csv(tmp_path, rows, [(7, 2, "x7")])
    err = _error(capsys, *_train(tmp_path, data, "--target", "y"))
    assert "line 9, column 'y': 'x7' is not a number, but" in err and "on line 2" in err
    assert "--loss cross_entropy" in err


@pytest.mark.parametrize("where,cell", [(0, "1e300"), (2, "1e200"), (0, "-4e38"), (2, "1e400")])
def test_values_beyond_float32_are_refused(tmp_path, rows, capsys, where, cell):
    data = _csv(tmp_path, rows, [(3, where, cell)])
    err = _error(capsys, *_train(tmp_path, data, "--target", "y"))
    assert f"line 5, column {'ayy'[where]!r}: {cell!r} is beyond the range of float32" in err


def test_predict_refuses_values_beyond_the_models_dtype(tmp_path, rows, capsys):
    data = _csv(tmp_path, rows)
    assert _run(capsys, *_train(tmp_path, data, "--target", "y"))[0] == 0
    bad = _write(tmp_path / "p.csv", ["a", "b"], [[1, 2], ["1e300", 3]])
    with pytest.raises(SystemExit) as exit_:
        cli.main(["predict", str(tmp_path / "m.npz"), bad])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert err == ("backprop: error: " + bad + " line 3, column 'a': '1e300' is beyond the range "
                   "of float32, the model's dtype (|value| <= 3.403e+38)\n")
    assert out == ""  # every row is checked before any prediction is written


@pytest.mark.parametrize("cell", ["1_000", "\u0661\u0662", "\uff11", "0x10", "1e5e3", "--1"])
def test_only_plain_ascii_decimals_are_numbers(tmp_path, rows, capsys, cell):
    data = _csv(tmp_path, rows, [(2, 1, cell)])
    err = _error(capsys, *_train(tmp_path, data, "--target", "y"))
    assert f"line 4, column 'b': {cell!r} is not" in err
    bad = _write(tmp_path / "p.csv", ["a", "b"], [[1, 2], [3, cell]])
    _run(capsys, *_train(tmp_path, _csv(tmp_path, rows), "--target", "y"))
    err = _error(capsys, "predict", str(tmp_path / "m.npz"), bad)
    assert f"line 3, column 'b': {cell!r} is not" in err


def test_plain_decimals_with_spaces_signs_and_exponents_are_read(tmp_path, rows, capsys):
    data = _csv(tmp_path, rows, [(0, 0, " +1.5 "), (1, 0, "-.5"), (2, 0, "2."), (3, 0, "1E-3"),
                                 (4, 0, "\t7e+2")])
    status, out = _run(capsys, *_train(tmp_path, data, "--target", "y"))
    assert status == 0 and "regressing y" in out.out


@pytest.mark.parametrize("options,message", [
    (["--seed", "-1"], "--seed must be an integer >= 0; got '-1'"),
    (["--seed", "1_0"], "--seed must be an integer >= 0; got '1_0'"),
    (["--epochs", "0"], "--epochs must be an integer >= 1; got '0'"),
    (["--epochs", "-3"], "--epochs must be an integer >= 1; got '-3'"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1; got '0'"),
    (["--layers", "64,,64"], "--layers must be comma-separated positive integers"),
    (["--layers", ""], "--layers must be comma-separated positive integers"),
    (["--layers", " "], "--layers must be comma-separated positive integers"),
    (["--layers", "8,0"], "--layers must be comma-separated positive integers"),
    (["--layers", "\u0666\u0664"], "--layers must be comma-separated positive integers"),
    (["--lr", "nan"], "--lr must be a number; got 'nan'"),
    (["--lr", "0"], "--lr must be a finite number > 0; got '0'"),
    (["--lr", "1e999"], "--lr must be a finite number; got '1e999'"),
    (["--val-fraction", "1"], "--val-fraction must lie in [0, 1)"),
    (["--features", "a,,b"], "--features must be comma-separated column names"),
    (["--features", "a,a"], "--features names a column twice"),
    (["--features", "a,y"], "column 'y' is a target and cannot be a feature too"),
])
def test_bad_options_are_refused_before_training(tmp_path, rows, capsys, monkeypatch, options,
                                                 message):
    data = _csv(tmp_path, rows)
    monkeypatch.setattr(cli_data.MLP, "fit", _refuse)
    err = _error(capsys, *_train(tmp_path, data, "--target", "y", *options))
    assert err.startswith(f"backprop: error: {message}")


def test_lr_that_diverges_is_one_line_and_writes_no_model(tmp_path, rows, capsys):
    data = _csv(tmp_path, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warnings before the error line
        err = _error(capsys, *_train(tmp_path, data, "--target", "y", "--lr", "1e308"))
    assert "training diverged" in err and "no model written" in err
    assert not (tmp_path / "m.npz").exists()


def test_an_unwritable_out_path_is_found_before_training(tmp_path, rows, capsys, monkeypatch):
    if not os.path.isdir("/proc") or os.path.exists("/proc/m.npz"):
        pytest.skip("no /proc here")
    data = _csv(tmp_path, rows)
    monkeypatch.setattr(cli_data.MLP, "fit", _refuse)
    err = _error(capsys, "train", data, "--target", "y", "--out", "/proc/m.npz",
                 "--backend", "numpy")
    assert err.startswith("backprop: error: --out /proc/m.npz: cannot write in /proc")


def test_loss_mse_on_a_text_target_is_refused(tmp_path, rows, capsys, monkeypatch):
    data = _csv(tmp_path, [r + ["up" if float(r[0]) > 0 else "down"] for r in rows],
                header=("a", "b", "y", "kind"))
    monkeypatch.setattr(cli_data.MLP, "fit", _refuse)
    err = _error(capsys, *_train(tmp_path, data, "--target", "kind", "--features", "a,b",
                                 "--loss", "mse"))
    label = "up" if float(rows[0][0]) > 0 else "down"
    assert err.endswith(f"line 2, column 'kind': {label!r} is not a number (--loss mse needs a "
                        "number in every target cell)")


def test_cross_entropy_on_non_integer_numbers_is_refused(tmp_path, rows, capsys, monkeypatch):
    data = _csv(tmp_path, rows)
    monkeypatch.setattr(cli_data.MLP, "fit", _refuse)
    err = _error(capsys, *_train(tmp_path, data, "--target", "y", "--loss", "cross_entropy"))
    assert "--loss cross_entropy: target column 'y' holds numbers that are not integers" in err
    assert f"({rows[0][2]!r} on line 2)" in err


@pytest.mark.parametrize("cell", ["1e400", "1e300", "2.5"])
def test_cross_entropy_refuses_numbers_that_are_no_integer_labels(tmp_path, rows, capsys, cell):
    data = _csv(tmp_path, [r[:2] + [str(i % 3)] for i, r in enumerate(rows)], [(6, 2, cell)])
    err = _error(capsys, *_train(tmp_path, data, "--target", "y", "--loss", "cross_entropy"))
    assert f"holds numbers that are not integers ({cell!r} on line 8)" in err


def test_cross_entropy_on_integers_takes_them_as_labels_in_numeric_order(tmp_path, rows, capsys):
    labels = ["1", "2", "10"]
    data = _csv(tmp_path, [r[:2] + [labels[i % 3]] for i, r in enumerate(rows)])
    model = str(tmp_path / "m.npz")
    status, out = _run(capsys, *_train(tmp_path, data, "--target", "y", "--loss", "cross_entropy"))
    assert status == 0 and "classifying y (3 classes, integer labels)" in out.out
    _, out = _run(capsys, "predict", model, data, "--proba")
    assert out.out.splitlines()[0] == "p(1),p(2),p(10)"
    _, out = _run(capsys, "predict", model, data)
    assert {r[0] for r in csv.reader(io.StringIO(out.out))} <= {"y", "1", "2", "10"}


def test_an_empty_class_label_is_refused(tmp_path, rows, capsys):
    data = _csv(tmp_path, [r[:2] + ["up" if i % 2 else "down"] for i, r in enumerate(rows)],
                [(5, 2, " ")])
    err = _error(capsys, *_train(tmp_path, data, "--target", "y"))
    assert "line 7, column 'y': ' ' is empty: every row needs a class label" in err


def test_the_data_file_after_target_is_a_clear_error(tmp_path, rows, capsys, monkeypatch):
    data = _csv(tmp_path, rows)
    monkeypatch.setattr(cli_data.MLP, "fit", _refuse)
    err = _error(capsys, "train", "--target", "y", data, "--out", str(tmp_path / "m.npz"))
    assert "--target takes every word up to the next option" in err
    assert "give the data file first" in err
    monkeypatch.undo()
    status, out = _run(capsys, "train", "--out", str(tmp_path / "m.npz"), "--target", "y",
                       "--epochs", "1", "--no-progress", "--backend", "numpy", data)
    assert status == 0  # options first, the file last: fine


@pytest.mark.parametrize("layers", ["100000000", "20000,20000"])
def test_a_model_over_the_parameter_limit_is_refused_before_allocating(tmp_path, rows, capsys,
                                                                        monkeypatch, layers):
    data = _csv(tmp_path, rows)
    monkeypatch.setattr(cli_data, "MLP", _refuse)  # no allocation: refused before the model
    err = _error(capsys, *_train(tmp_path, data, "--target", "y", "--layers", layers))
    assert "parameters; backprop train makes at most 268,435,456 (2**28)" in err


def test_a_run_that_needs_more_memory_than_there_is_is_refused(tmp_path, rows, capsys,
                                                               monkeypatch):
    data = _csv(tmp_path, rows)
    monkeypatch.setattr(cli_data, "MLP", _refuse)
    monkeypatch.setattr(cli_data, "_available_memory", lambda: 2**20)
    err = _error(capsys, *_train(tmp_path, data, "--target", "y", "--layers", "2000,2000"))
    assert "needs about" in err and "GiB is available" in err


@pytest.mark.parametrize("max_rows", [None, 5])
def test_a_pipe_or_an_undercount_reads_the_same_rows(tmp_path, rows, monkeypatch, max_rows):
    """Rows are written into arrays allocated from the file's line count; a pipe (no count) or a
    count that falls short joins the blocks instead, with the same result."""
    monkeypatch.setattr(csv_table, "BLOCK_CELLS", 60)  # blocks of 64 rows: several blocks
    rows = [list(r) for r in rows * 5]
    for i, row in enumerate(rows):
        row[2] = ["up", "down", "left"][i % 3] if i % 2 else row[2]
    data = _csv(tmp_path, rows)
    numeric = _write(tmp_path / "n.csv", ["a", "b", "y"], [r[:2] + [r[0]] for r in rows])
    results = []
    for limit in ("count", max_rows):
        if limit != "count":
            monkeypatch.setattr(csv_table, "count_rows", lambda path: limit)
        with csv_table.CsvTable(numeric) as table:
            X, Y, classes, _ = cli_data.read_training_data(table, ["a", "b"], ["y"], None)
        assert X.shape == (200, 2) and Y.shape == (200, 1) and classes is None
        np.testing.assert_array_equal(X[:, 0], Y[:, 0])
        with csv_table.CsvTable(data) as table:
            results.append((X, cli_data.read_training_data(table, ["a", "b"], ["y"], "classes")))
    (X0, (_, Y0, c0, _)), (X1, (_, Y1, c1, _)) = results
    np.testing.assert_array_equal(X0, X1)
    np.testing.assert_array_equal(Y0, Y1)
    assert c0 == c1 == sorted({r[2] for r in rows})  # numbers and words: text labels
    np.testing.assert_array_equal(np.array(c0)[Y0], [r[2] for r in rows])


def test_carriage_return_line_ends(tmp_path, rows, capsys):
    path = tmp_path / "cr.csv"
    path.write_bytes(("a,b,y\r" + "\r".join(",".join(r) for r in rows) + "\r").encode())
    with csv_table.CsvTable(str(path)) as table:
        X, Y, _, _ = cli_data.read_training_data(table, ["a", "b"], ["y"], None)
    np.testing.assert_array_equal(Y[:, 0], [float(r[2]) for r in rows])
