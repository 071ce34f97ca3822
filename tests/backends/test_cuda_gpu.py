"""The cuda backend on a real GPU: NVRTC compilation, the kernels against numpy, the CuPy disk
cache, graphs, device-resident prediction and error reporting.

Skipped, with the reason, where CuPy or a GPU is missing (then test_cuda_emulated.py still checks
the kernels' arithmetic on the CPU). The rest of the suite also runs on the GPU through the
``backend`` fixture ("cuda" is then available).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import backprop as bp
from backprop.backends import ACTIVATIONS, why_unavailable

from ..conftest import assert_close

REASON = why_unavailable("cuda")
if REASON is None:
    import cupy  # noqa: F401
    if getattr(cupy, "__version__", "").endswith("+fake"):
        REASON = "the cuda backend is emulated here (BACKPROP_TEST_CUDA_EMULATOR=1), not a GPU"
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no GPU for the cuda backend: {REASON}")


@pytest.fixture(scope="module")
def gpu():
    from backprop.backends import get_backend
    return get_backend("cuda")


def dev(bk, x, dtype):
    return bk.asarray(np.array(x), dtype)


def host(bk, x):
    return np.asarray(bk.to_numpy(x), dtype=np.float64)


@pytest.mark.parametrize("config", ["L", "M", "S"])
@pytest.mark.parametrize("ops", ["nn", "tn", "nt", "tt"])
def test_gemm_every_config_on_gpu(gpu, dtype, config, ops):
    rng = np.random.default_rng(0)
    ta, tb = ops[0] == "t", ops[1] == "t"
    for m, k, n in [(1, 1, 1), (7, 129, 33), (65, 7, 129), (129, 65, 1), (257, 300, 511), (1024, 64, 1000)]:
        A = rng.normal(size=(k, m) if ta else (m, k))
        B = rng.normal(size=(n, k) if tb else (k, n))
        with gpu.gemm_config_forced(config):
            got = gpu.gemm(dev(gpu, A, dtype), dev(gpu, B, dtype), trans_a=ta, trans_b=tb)
        assert_close(host(gpu, got), (A.T if ta else A) @ (B.T if tb else B), dtype,
                     what=f"gemm {config} {ops} {m}x{k}x{n}")


def test_gemm_matches_cublas_at_scale(gpu):
    import cupy
    rng = np.random.default_rng(1)
    A = cupy.asarray(rng.normal(size=(2048, 1536)), dtype=np.float32)
    B = cupy.asarray(rng.normal(size=(1536, 1024)), dtype=np.float32)
    ours = gpu.gemm(A, B)
    ref = cupy.matmul(A, B)
    err = float(cupy.max(cupy.abs(ours - ref)) / cupy.max(cupy.abs(ref)))
    assert err < 1e-5


def test_emulated_and_gpu_kernels_agree(gpu, dtype):
    """The GPU runs the same sources as the emulator: fused layer kernels agree with numpy."""
    rng = np.random.default_rng(2)
    for act in ACTIVATIONS:
        A, W, b = rng.normal(size=(300, 129)), rng.normal(size=(129, 65)), rng.normal(size=65)
        got = gpu.dense_forward(dev(gpu, A, dtype), dev(gpu, W, dtype), dev(gpu, b, dtype), act)
        from backprop.backends.numpy_backend import NumpyBackend
        assert_close(host(gpu, got), NumpyBackend().dense_forward(A, W, b, act), dtype, what=act)


def test_disk_cache_is_reused_by_a_new_process(tmp_path):
    """A second process loads the compiled module from CuPy's disk cache (no NVRTC call)."""
    env = dict(os.environ, CUPY_CACHE_DIR=str(tmp_path))
    # CuPy 14 compiles through cupy.cuda.compiler._NVRTCProgram (compile_using_nvrtc builds one,
    # and so does the empty-source preprocessing that keys the cache): count the programs built
    # from our source, which a cache hit never builds.
    script = ("import numpy as np, cupy\n"
              "import cupy.cuda.compiler as c\n"
              "from backprop.backends.cuda import CudaBackend\n"
              "calls = []\n"
              "init = c._NVRTCProgram.__init__\n"
              "def counting(self, src, *a, **k):\n"
              "    calls.append('BP_ACT_TANH' in (src if isinstance(src, str) else src.decode()))\n"
              "    init(self, src, *a, **k)\n"
              "c._NVRTCProgram.__init__ = counting\n"
              "bk = CudaBackend()\n"
              "bk.activation_forward(bk.zeros((4, 4), np.float32), 'tanh')\n"
              "bk.synchronize()\n"
              "print('NVRTC', sum(calls))\n")
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "NVRTC 1" in first.stdout, first.stdout  # the hook sees the compilation it counts
    assert any(tmp_path.rglob("*")), "nothing was written to the disk cache"
    cached = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "NVRTC 0" in second.stdout, second.stdout
    # a cache miss would write (or rewrite) a cache file
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == cached


def test_predict_keeps_cupy_arrays_on_the_device(gpu):
    import cupy
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(64, 3)), rng.normal(size=(64, 1))
    net = bp.MLP([3, 16, 1], backend="cuda", dtype="float32", seed=0)
    net.fit(X, Y, epochs=5)
    F_dev = net.predict(cupy.asarray(X))
    assert isinstance(F_dev, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(F_dev), net.predict(X), rtol=1e-6)


def test_graph_trainer_matches_eager_on_gpu(gpu):
    """fit on the fused path (a CUDA graph per step) against the kernel-by-kernel path."""
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(100, 1)), rng.normal(size=(100, 1))
    results = []
    for fused in (False, True):
        net = bp.MLP([1] + [10] * 10 + [1], backend="cuda", dtype="float64", seed=0)
        history = net.fit(X, Y, loss="sse", optimizer="adam", lr=1e-3, epochs=5, batch_size=32,
                          l2=1e-4, seed=0, fused=fused)
        results.append((history.loss, net.weights))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_cuda_errors_name_the_kernel(gpu):
    from backprop.backends.cuda import CudaKernelError
    x = gpu.zeros((4,), np.float32)
    with pytest.raises(CudaKernelError, match="activation_forward_f32"):
        gpu._launch("activation_forward_f32", (1, 1, 1), (4096, 1, 1), (x, x, np.int64(4), np.int32(0)))
