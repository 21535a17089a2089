"""File-system primitives: hashing, reading, atomic writes, and the fault-injection points tests use."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

FAULT_ENV = "YOLOPATCH_FAULT"  # "fail-write:N" raises at the N-th tree write, "kill-write:N" exits the process
_writes = 0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def mode_of(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


def reset_fault_counter() -> None:
    global _writes
    _writes = 0


def _fault_point() -> None:
    """Count a tree write; fail or die at the configured one (for the all-or-nothing tests)."""
    global _writes
    _writes += 1
    spec = os.environ.get(FAULT_ENV, "")
    if ":" not in spec:
        return
    kind, _, number = spec.partition(":")
    if number.isdigit() and int(number) == _writes:
        if kind == "fail-write":
            raise OSError(f"injected failure at write {_writes}")
        if kind == "kill-write":
            os._exit(137)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int | None = None, counted: bool = True) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over the destination."""
    if counted:
        _fault_point()
    tmp = path.with_name(f".{path.name}.yolopatch-tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode if mode is not None else 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_file(path: Path, counted: bool = True) -> None:
    if counted:
        _fault_point()
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)
