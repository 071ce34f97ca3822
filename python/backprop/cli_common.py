"""What the command line's modules share: the usage error, the output-path check, the backend
choice. ``cli`` (bench, demo, pinn, info) and ``cli_data`` (train, predict) both import it."""

from __future__ import annotations

import os
import tempfile

from .backends import BACKENDS, why_unavailable

EXIT_USAGE = 2  # argparse's exit status for a command-line error


class UsageError(Exception):
    """A user error on the command line: reported as one line, exit status 2, no traceback."""


def check_writable(path, option):
    """Raises UsageError unless a file can be written at ``path`` (checked before the work): a
    file is created in its folder and removed again, as the permission bits do not tell (root,
    read-only mounts, /proc)."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: no such directory {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: permission denied")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".backprop-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {folder} "
                         f"({exc.strerror or exc})") from None


def pick_backend(name):
    """The backend a ``--backend`` option names ("auto": cpu if it works here, else numpy);
    UsageError for an unknown name or a backend that cannot run here."""
    if name == "auto":
        return "cpu" if why_unavailable("cpu") is None else "numpy"
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; valid: auto, {', '.join(BACKENDS)}")
    reason = why_unavailable(name)
    if reason is not None:
        raise UsageError(f"backend {name!r} is unavailable here: {reason}")
    return name
