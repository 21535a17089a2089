"""One-line descriptions of the exceptions a step raises."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import torch

_TORCH_DIR = os.path.dirname(torch.__file__)


def describe(exc: BaseException) -> str:
    """The exception and where it was raised (the innermost frame outside torch), on one line."""
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > 300:
        text = text[:300] + " ..."
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not frame.filename.startswith(_TORCH_DIR):
            where = f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"
            break
    return f"{type(exc).__name__}: {text}{where}"
