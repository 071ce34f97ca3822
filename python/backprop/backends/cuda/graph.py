"""CUDA graph capture for the cuda backend, and the graph mode the captured kernels run in.

``capture(backend, fn)`` records the kernels ``fn()`` launches as one CUDA graph: ``fn`` runs once
normally first (it compiles the kernels and allocates the backend's workspace), then once more
on a non-blocking stream that captures, where nothing runs. ``Graph.launch()`` replays the
recording with one launch on the current stream.

A captured kernel keeps the arguments it was recorded with, so everything a replay must see
change lives in device memory, in a ``GraphContext`` the capturing code makes active with
``backend.graph_mode(ctx)``. In graph mode (and only there):

- a reduction (``loss``, ``weight_penalty``) writes its value into the next free slot of
  ``ctx.values`` (float64, one slot per reduction, in call order) instead of a new 0-d array,
  and returns that slot (a 0-d view), so nothing is allocated during a capture;
- an optimizer update (``sgd_update``, ``adam_update``) reads lr, and Adam's bias corrections
  1-β1^t and 1-β2^t, from ``ctx.hyper`` (three values of the parameters' dtype) instead of its
  arguments, and updates nothing while ``ctx.skip`` (one int64) is nonzero.

The protocol's signatures carry none of this: the frontend's own kernel sequence
(``MLP.compute_gradients`` and ``OptimizerState.apply``) is what gets captured.
"""

from __future__ import annotations

import numpy as np


class GraphContext:
    """The device memory a captured sequence reads and writes at every replay."""

    def __init__(self, backend, dtype, slots, skip=None):
        self.values = backend.zeros((slots,), np.float64)
        self.hyper = backend.zeros((3,), dtype)
        self.skip = skip   # one int64 of the backend, or None (never skip)
        self.used = 0      # slots handed out since graph mode was entered

    def next_value(self, kernel):
        if self.used >= self.values.size:
            raise RuntimeError(f"cuda {kernel}: the graph context has {self.values.size} value "
                               "slots, all used (one per reduction of the captured sequence)")
        slot = self.values[self.used:self.used + 1].reshape(())
        self.used += 1
        return slot


class Graph:
    """A captured sequence of kernels; ``launch()`` replays it (one graph launch)."""

    def __init__(self, launcher, graph, kernels, stream):
        self.launcher, self.graph, self.stream = launcher, graph, stream
        self.kernels = kernels  # kernels in the graph

    def launch(self):
        cp = self.launcher.cp
        self.graph.launch(cp.cuda.get_current_stream())
        self.launcher.graph_launches += 1
        self.launcher.launches += 1


def capture(backend, fn):
    """A Graph of the kernels ``fn()`` launches (see the module docstring).

    ``launches`` counts the warm-up's kernels and then one launch per replay, not the recording.
    If ``fn`` raises during the capture, the capture is ended (its error, if any, discarded) and
    the original error propagates.
    """
    launcher, cp = backend.launcher, backend.cp
    fn()  # the warm-up: kernels compiled, workspace allocated
    launcher.synchronize()
    stream = cp.cuda.Stream(non_blocking=True)
    before = launcher.launches
    graph = None
    with stream:
        launcher.capturing = True
        try:
            stream.begin_capture()
            try:
                fn()
            except BaseException:
                try:
                    stream.end_capture()
                except Exception:  # noqa: BLE001 - the body's error is the one to report
                    pass
                raise
            graph = stream.end_capture()
        finally:
            launcher.capturing = False
            kernels = launcher.launches - before
            launcher.launches = before
    return Graph(launcher, graph, kernels, stream)
