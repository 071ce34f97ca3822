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
    with pytest.raises(SystemExit, match="unknown configuration 'huge'"):
        cli.main(["bench", "--configs", "huge"])
    with pytest.raises(SystemExit, match="unknown backend 'tpu'"):
        cli.main(["bench", "--backends", "tpu"])


def test_demo_converges_on_the_reference_backend():
    """A shortened schedule (4 x 2,500 steps) already fits x sin(4πx) to a few percent."""
    from backprop import demo
    result = demo.run(backend="numpy", steps=2500)
    assert result["error"] < 0.05 and np.isfinite(result["final_loss"])
