"""The command line: bench, demo, info."""

import json

import numpy as np
import pytest

from backprop import bench, cli


def test_bench_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert cli.main(["bench", "--quick", "--configs", "raissi,small", "--backends", "numpy",
                     "--json", str(path), "--peak", "230"]) == 0
    out = capsys.readouterr().out
    assert "us/step" in out and "GFLOP/s" in out and "raissi" in out and "small" in out
    result = json.loads(path.read_text())
    rows = {(r["config"], r["backend"]): r for r in result["rows"]}
    assert set(rows) == {("raissi", "numpy"), ("small", "numpy")}
    for row in rows.values():
        assert row["us_per_step"] > 0 and row["speedup_vs_numpy"] == 1.0
        assert row["gflops"] == pytest.approx(
            bench.CONFIGS[row["config"]].flops_per_step() / row["us_per_step"] / 1e3)
        assert row["percent_of_peak"] == pytest.approx(100 * row["gflops"] / 230)
    assert result["command"].startswith("backprop bench")
    assert result["machine"]["cores"] >= 1


def test_bench_reports_unavailable_backends(capsys):
    from backprop.backends import BACKENDS, why_unavailable
    missing = [b for b in BACKENDS if why_unavailable(b)]
    if not missing:
        pytest.skip("every backend is available here")
    cli.main(["bench", "--quick", "--configs", "raissi", "--backends", ",".join(BACKENDS)])
    out = capsys.readouterr().out
    for name in missing:
        assert f"skipped {name}: " in out


def test_bench_refuses_a_backend_whose_gradients_differ(monkeypatch):
    from backprop.backends.numpy_backend import NumpyBackend

    class Wrong(NumpyBackend):
        name = "wrong"

        def _colsum(self, G, out):
            return super()._colsum(2 * G, out)

    import backprop.backends as registry
    monkeypatch.setitem(registry._REGISTRY, "wrong", ("tests.test_cli", "Wrong"))
    monkeypatch.setitem(registry._INSTANCES, "wrong", Wrong())
    logged = []
    result = bench.run(configs=["raissi"], backends=["numpy", "wrong"], quick=True,
                       log=logged.append)
    row = [r for r in result["rows"] if r["backend"] == "wrong"][0]
    assert row["us_per_step"] is None and row["max_grad_diff"] > 0.1
    assert any("gradients differ" in line for line in logged)


def test_flop_count():
    c = bench.Config("t", (2, 3, 4), 5, "tanh", "mse")
    # forward 2·5·(6+12), dW the same, G_prev only for the second layer 2·5·12
    assert c.flops_per_step() == 180 + 180 + 120


def test_bench_with_torch_agrees_when_installed(capsys):
    pytest.importorskip("torch")
    result = bench.run(configs=["raissi", "mnist"], backends=["numpy"], torch=True, quick=True,
                       log=print)
    torch_rows = [r for r in result["rows"] if r["backend"] == "torch"]
    assert len(torch_rows) == 2
    assert all(r["max_grad_diff"] < 1e-3 and r["us_per_step"] > 0 for r in torch_rows)


def test_demo_short_run_and_plot(tmp_path, capsys):
    assert cli.main(["demo", "--backend", "numpy", "--steps", "300"]) == 0
    out = capsys.readouterr().out
    assert "relative L2 error on 1000 test points" in out and "1200 steps" in out
    pytest.importorskip("matplotlib")
    png = tmp_path / "demo.png"
    cli.main(["demo", "--backend", "numpy", "--steps", "50", "--plot", str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_info_and_unknown_names(capsys):
    assert cli.main(["info"]) == 0
    assert "numpy  available" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--configs", "huge"])
    assert exit_.value.code == 2
    assert "backprop: error: unknown configuration 'huge'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--backends", "tpu"])
    assert exit_.value.code == 2
    assert "backprop: error: unknown backend 'tpu'" in capsys.readouterr().err


def test_demo_converges_on_the_reference_backend():
    """A shortened schedule (4 x 2,500 steps) already fits x sin(4πx) to a few percent."""
    from backprop import demo
    result = demo.run(backend="numpy", steps=2500)
    assert result["error"] < 0.05 and np.isfinite(result["final_loss"])


def _env():
    """The environment of a child process that imports this backprop."""
    import os

    import backprop
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(backprop.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _refuse_to_run(*args, **kwargs):
    raise AssertionError("the command ran although its arguments were wrong")


@pytest.mark.parametrize("argv,message", [
    (["demo", "--backend", "bogus"], "unknown backend 'bogus'; valid: auto, numpy, cpu, cuda"),
    (["demo", "--steps", "0"], "--steps must be >= 1; got 0"),
    (["demo", "--steps", "-5"], "--steps must be >= 1; got -5"),
    (["demo", "--seed", "-1"], "--seed must be >= 0; got -1"),
    (["bench", "--configs", ""], "no configurations given"),
    (["bench", "--configs", " , "], "no configurations given"),
    (["bench", "--backends", ""], "no backends given"),
    (["bench", "--peak", "-5"], "--peak must be a finite number of GFLOP/s > 0; got -5"),
    (["bench", "--peak", "nan"], "--peak must be a finite number of GFLOP/s > 0; got nan"),
    (["bench", "--peak", "inf"], "--peak must be a finite number"),
    (["bench", "--repeat", "0"], "--repeat must be >= 1"),
    (["bench", "--json", "/nonexistent-dir/results.json"], "--json /nonexistent-dir/results.json: no such directory"),
    (["bench", "--json", "."], "--json .: is a directory"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys, monkeypatch):
    from backprop import demo
    monkeypatch.setattr(bench, "run", _refuse_to_run)  # checked before any work
    monkeypatch.setattr(demo, "run", _refuse_to_run)
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"backprop: error: {message}")
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n")  # one line
    assert captured.out == ""


def test_plot_without_matplotlib_is_a_user_error(capsys, monkeypatch, tmp_path):
    import sys

    from backprop import demo
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.setattr(demo, "run", _refuse_to_run)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--steps", "5", "--plot", str(tmp_path / "out.png")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == ("backprop: error: --plot: plotting needs matplotlib: pip install matplotlib "
                   "(or, in the backprop source folder, pip install '.[plot]')\n")


def test_unwritable_json_path_is_found_before_the_benchmark(tmp_path, capsys, monkeypatch):
    import os
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        monkeypatch.setattr(bench, "run", _refuse_to_run)
        with pytest.raises(SystemExit) as exit_:
            cli.main(["bench", "--quick", "--json", str(folder / "r.json")])
        assert exit_.value.code == 2
        assert "permission denied" in capsys.readouterr().err
    finally:
        folder.chmod(0o700)


def test_user_error_in_a_real_process_has_no_traceback():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "backprop", "demo", "--steps", "-5"],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "backprop: error: --steps must be >= 1; got -5\n"


def test_output_into_a_closed_pipe_exits_quietly():
    """`backprop info | head -1`: the reader is gone before the output is written."""
    import os
    import signal
    import subprocess
    import sys
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "backprop", "info"], stdout=write_end,
                              stderr=subprocess.PIPE, env=_env(), timeout=120)
    finally:
        os.close(write_end)
    assert proc.stderr == b""
    assert proc.returncode == 128 + signal.SIGPIPE


@pytest.mark.parametrize("pinn", [False, True])
def test_a_json_write_that_fails_after_the_run_is_one_line(tmp_path, capsys, monkeypatch, pinn):
    """The disk fills up between the check and the write: one line, exit status 2, the table
    already printed (bench and bench --pinn alike)."""
    from backprop import bench_pinn

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if pinn:
        monkeypatch.setattr(bench_pinn, "run", lambda **kw: {"rows": [], "skipped": {}})
    else:
        monkeypatch.setattr(bench, "run", lambda **kw: {"rows": [], "skipped": {}, "machine": {"cpu": "x", "cores": 1}})
        monkeypatch.setattr(bench, "format_table", lambda result: "the table")
    monkeypatch.setattr(cli.json, "dump", no_space)
    path = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--quick", "--json", str(path)] + (["--pinn"] if pinn else []))
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == (f"backprop: error: --json {path}: No space left on device "
                            "(the table above has the results)\n")
    assert "N_f" in captured.out if pinn else "the table" in captured.out
