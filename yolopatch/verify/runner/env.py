"""Process set-up inside the target interpreter, before torch or the target is imported.

No network (a download must fail at once instead of hanging), no writes into the checkout (config and
font folders point at the scratch folder the orchestrator made), and one channel back to the
orchestrator: progress lines on stderr that start with PROGRESS_PREFIX.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys

from ..protocol import PROGRESS_PREFIX
from .causes import NETWORK_BLOCKED

_NETWORK_FAMILIES = tuple(f for f in (getattr(socket, "AF_INET", None), getattr(socket, "AF_INET6", None)) if f)


class NetworkDisabled(OSError):
    pass


def _refuse(*_args, **_kwargs):
    raise NetworkDisabled(NETWORK_BLOCKED)


def block_network() -> None:
    """Make every internet connection attempt raise at once (local unix sockets keep working)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if self.family in _NETWORK_FAMILIES:
            _refuse()
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in _NETWORK_FAMILIES:
            _refuse()
        return real_connect_ex(self, address)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse


def _stand_in_font() -> bytes:
    """A TrueType font shipped with matplotlib (a YOLOv5 requirement), found without importing it."""
    found = importlib.util.find_spec("matplotlib")
    for folder in (found.submodule_search_locations or []) if found else []:
        path = os.path.join(folder, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
    return b""


def seed_fonts(config_dir: str) -> None:
    """YOLOv5 v6.0/v6.1 fetch Arial.ttf into their config folder when imported (v6.0 even loads it).
    A stand-in TrueType font in the scratch config folder (the subprocess's YOLO*_CONFIG_DIR) satisfies
    them offline; verify never draws text."""
    font = _stand_in_font()
    for folder in (config_dir, os.path.join(config_dir, "Ultralytics")):
        os.makedirs(folder, exist_ok=True)
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                with open(path, "wb") as f:
                    f.write(font)


def progress(text: str) -> None:
    stream = sys.__stderr__
    stream.write(PROGRESS_PREFIX + text.replace("\n", " ") + "\n")
    stream.flush()


def set_threads(torch_module) -> int:
    """Half the cores (the checkout and its pristine copy run side by side), at most 4: the tensors are
    small, and oversubscribed OpenMP threads make every step many times slower. YOLOPATCH_VERIFY_THREADS
    overrides it."""
    wanted = os.environ.get("YOLOPATCH_VERIFY_THREADS", "")
    threads = int(wanted) if wanted.isdigit() and int(wanted) > 0 else max(1, min((os.cpu_count() or 1) // 2, 4))
    torch_module.set_num_threads(threads)
    return threads
