"""`backprop train` and `predict` read a CSV file a block of rows at a time into float64
arrays: peak memory grows with the numbers (train: about twice them, predict: a block), not
with the text (the whole file as lists of Python strings took about 16 times the numbers)."""

import subprocess
import sys

import numpy as np
import pytest

from tests.test_cli import _env

ROWS, COLUMNS = 120_000, 9  # a 10 MB file; its numbers are 8.6 MB as float64
NUMBERS_MB = ROWS * COLUMNS * 8 / 2**20

# The peak resident memory a command adds to an interpreter that has imported it: VmHWM, the
# high-water mark of this process's own memory, reset after the imports (clear_refs 5; if that is
# refused, the imports' peak is the baseline). Not ru_maxrss: after fork and exec it starts from
# the parent's peak, here pytest's, which hides anything smaller.
_CHILD = """
import sys
import backprop.backends.numpy_backend
from backprop import cli

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
except OSError:
    before = status("VmHWM")
code = cli.main(sys.argv[1:])
print(f"peak growth {(status('VmHWM') - before) / 1024:.1f} MB", file=sys.stderr)
sys.exit(code)
"""

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("memory") / "big.csv"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(ROWS, COLUMNS - 1))
    y = X @ rng.normal(size=COLUMNS - 1)
    with open(path, "w") as f:
        f.write(",".join(f"x{j}" for j in range(COLUMNS - 1)) + ",y\n")
        np.savetxt(f, np.column_stack([X, y]), fmt="%.6f", delimiter=",")
    return path


def _peak_growth_mb(*argv):
    proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stderr.strip().splitlines()[-1].split()[2]), proc.stdout


def test_train_and_predict_memory_grows_with_the_numbers_not_the_text(big_csv, tmp_path):
    model = str(tmp_path / "m.npz")
    grown, _ = _peak_growth_mb("train", str(big_csv), "--target", "y", "--layers", "4",
                               "--epochs", "1", "--batch-size", "256", "--backend", "numpy",
                               "--no-progress", "--out", model)
    # the rows read (1x), their shuffled copy (1x) and a standardization temporary, then float32
    assert grown < 3 * NUMBERS_MB + 16, f"train: {grown} MB for {NUMBERS_MB:.1f} MB of numbers"
    grown, out = _peak_growth_mb("predict", model, str(big_csv))
    assert len(out.splitlines()) == ROWS + 1
    # a block of rows at a time, and one output column kept until the end
    assert grown < NUMBERS_MB + 16, f"predict: {grown} MB for {NUMBERS_MB:.1f} MB of numbers"
