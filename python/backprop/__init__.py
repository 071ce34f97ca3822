"""backprop: dense neural networks trained with explicit backpropagation on three backends."""

from .backends import BackendUnavailable, available_backends, get_backend

__version__ = "0.1.0"
