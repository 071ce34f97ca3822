"""Host buffers for saved intermediate values, handed out again once nothing refers to them.

``taylor_forward`` saves every layer's streams for the backward: for the Burgers network at
10,000 points that is 26 MB in float32 per call. Fresh memory of that size comes from the
operating system page by page (a page fault and a zeroed page each: about a third of the
forward's time), and is given back when freed. A ``BufferPool`` keeps the last few buffers and
hands one out again when no array refers to it any more: numpy views keep their base buffer
alive (``view.base``), so a buffer whose only references are the pool's own is free. It relies
on CPython's reference counts, as the cpu backend does (pybind11).
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

ALIGN = 64  # bytes: where each view starts


class BufferPool:
    """Up to ``keep`` byte buffers; ``views(shapes, dtype)`` carves C-contiguous arrays of those
    shapes out of one buffer that nothing else refers to (a new one when none is free)."""

    def __init__(self, keep=4):
        self.keep = keep
        self._buffers = []
        self._lock = threading.Lock()

    def __reduce__(self):
        """A copy (pickle, deepcopy: a model carries its backend) is an empty pool: the buffers
        are scratch memory, and the lock cannot be copied."""
        return (BufferPool, (self.keep,))

    def _free_buffer(self, nbytes):
        for k in range(len(self._buffers)):
            # references: the list and getrefcount's argument; a view handed out adds one
            if self._buffers[k].nbytes == nbytes and sys.getrefcount(self._buffers[k]) == 2:
                return k
        return None

    def views(self, shapes, dtype):
        dtype = np.dtype(dtype)
        sizes = [math.prod(int(d) for d in s) for s in shapes]
        # each view starts on a 64-byte boundary (a cache line: the cpu backend streams its saved
        # values past the cache with aligned stores)
        step = max(1, ALIGN // dtype.itemsize)
        starts, end = [], 0
        for size in sizes:
            starts.append(end)
            end += -(-size // step) * step
        nbytes = max(1, end) * dtype.itemsize + ALIGN
        with self._lock:
            k = self._free_buffer(nbytes)
            if k is None:
                buf = np.empty(nbytes, np.uint8)
                self._buffers.append(buf)
                del self._buffers[:-self.keep]
            else:
                buf = self._buffers.pop(k)
                self._buffers.append(buf)  # the most recently used last
            skip = -buf.ctypes.data % ALIGN
            flat = buf[skip:skip + nbytes - ALIGN].view(dtype)
            return [flat[start:start + size].reshape(shape)
                    for shape, start, size in zip(shapes, starts, sizes)]
