"""One run at a time per checkout: an advisory lock on the checkout folder itself (no file left behind)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import RefusedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not serialised there
    fcntl = None


@contextlib.contextmanager
def exclusive(root: Path):
    if fcntl is None:
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RefusedError(f"another yolopatch run is working on {root}; try again when it has finished") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
