"""Type stubs for backprop._cpu, the cpu backend's C++ module (csrc/bindings*.cpp).

Every array argument is a numpy.ndarray of float32 or float64 (all of one dtype), C-contiguous
and non-empty; outputs are written in place. The aliasing rule: an elementwise kernel
(activation_forward, activation_backward, dropout) may write its output into its FIRST input (the
same buffer exactly); no other output may overlap any input. Anything else raises TypeError or
ValueError before C++ runs. Results do not depend on where the buffers start (csrc/lanes.hpp).
"""

from typing import Optional, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]

eigen_version: str

def gemm(A: FloatArray, B: FloatArray, out: FloatArray, trans_a: bool = False, trans_b: bool = False,
         alpha: float = 1.0, beta: float = 0.0) -> FloatArray: ...
def dense_forward(A: FloatArray, W: FloatArray, b: FloatArray, activation: str,
                  out: FloatArray) -> FloatArray: ...
def dense_backward(G: FloatArray, A_prev: FloatArray, W: FloatArray, activation_prev: Optional[str],
                   dW: FloatArray, db: FloatArray, G_prev: Optional[FloatArray]) -> None: ...
def activation_forward(H: FloatArray, activation: str, out: FloatArray) -> FloatArray: ...
def activation_backward(dA: FloatArray, A: FloatArray, activation: str, out: FloatArray) -> FloatArray: ...
def colsum(G: FloatArray, out: FloatArray) -> FloatArray: ...
def dropout(A: FloatArray, M: FloatArray, out: FloatArray) -> FloatArray: ...
def loss(name: str, F: FloatArray, Y: FloatArray, G: FloatArray) -> float: ...
def weight_penalty(W: FloatArray, dW: FloatArray, l1: float, l2: float) -> float: ...
def sgd_update(param: FloatArray, grad: FloatArray, velocity: Optional[FloatArray], lr: float,
               momentum: float = 0.0, nesterov: bool = False) -> None: ...
def adam_update(param: FloatArray, grad: FloatArray, m: FloatArray, v: FloatArray, lr: float,
                beta1: float, beta2: float, eps: float, step: int) -> None: ...
def taylor_forward(As: Sequence[FloatArray], dAs: Sequence[FloatArray], d2As: Sequence[FloatArray],
                   Ws: Sequence[FloatArray], bs: Sequence[FloatArray], activations: Sequence[str],
                   first: Sequence[int], second: Sequence[tuple[int, int]]) -> None:
    """Writes As[1:], dAs, d2As (As[0] is X): As[l], dAs[l], d2As[l] must be one buffer, in that
    order (dAs[0], d2As[0] likewise), as base.taylor_forward allocates them."""
def taylor_backward(As: Sequence[FloatArray], dAs: Sequence[FloatArray], d2As: Sequence[FloatArray],
                    Ws: Sequence[FloatArray], activations: Sequence[str], first: Sequence[int],
                    second: Sequence[tuple[int, int]], G: FloatArray, dG: Optional[FloatArray],
                    d2G: Optional[FloatArray], dWs: Sequence[FloatArray],
                    dbs: Sequence[FloatArray]) -> None:
    """Writes dWs and dbs (dG, d2G None: zero)."""

class _Trainer:
    """A dense network's whole training step in one native call, over the model's own buffers.

    It keeps no step count: ``t`` is the number of updates applied before the call (Adam's bias
    corrections use t + 1, t + 2, ...), and the caller counts what was applied.
    """

    def __init__(self, W: Sequence[FloatArray], b: Sequence[FloatArray], dW: Sequence[FloatArray],
                 db: Sequence[FloatArray], activations: Sequence[str], loss: str, optimizer: str,
                 state1: Sequence[FloatArray], state2: Sequence[FloatArray], lr: float,
                 momentum: float = 0.0, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 l1: float = 0.0, l2: float = 0.0) -> None:
        """No step count: it is an argument of step and epoch."""
    def step(self, X: FloatArray, Y: FloatArray, lr: float, t: int) -> float:
        """The loss of the batch; the update (step t + 1) is applied if and only if it is finite."""
    def epoch(self, X: FloatArray, Y: FloatArray, batch_size: int, order: Optional[npt.NDArray[np.int64]],
              lr: float, t: int) -> npt.NDArray[np.float64]:
        """The batch losses; batch i is update t + i + 1. Every finite loss was applied; the epoch
        stops after the first that is not (not applied). On Ctrl-C it stops after the batch in
        progress and raises KeyboardInterrupt with ``losses`` and ``updates`` (all applied)."""

class Trainer32(_Trainer): ...
class Trainer64(_Trainer): ...

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def load_blas(path: str, prefix: str = "scipy_", suffix: str = "", ilp64: bool = False) -> None: ...
