"""Step 1: which code runs. The checkout must be what `import <package>` loads in this interpreter (with
the checkout first on PYTHONPATH); and, as a note, whether the interpreter would load it without that."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path


def _located(package: str, paths=None):
    """Where `import package` would load from, without importing it (None: nowhere)."""
    saved = sys.path[:]
    try:
        if paths is not None:
            sys.path[:] = paths
        importlib.invalidate_caches()
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    finally:
        sys.path[:] = saved
    if found is None:
        return None
    if found.origin and found.origin not in ("namespace", "built-in", "frozen"):
        return found.origin
    locations = list(found.submodule_search_locations or [])
    return locations[0] if locations else None


def _inside(path: str, root: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(root)
    except (OSError, ValueError):
        return False
    return True


def _without_first(paths: list, root: Path) -> list:
    """sys.path as the interpreter has it without the entry verify put first for the checkout."""
    rest = list(paths)
    for k, entry in enumerate(rest):
        if entry and os.path.realpath(entry) == str(root):
            del rest[k]
            break
    return rest


class ImportCheck:
    def __init__(self, spec):
        self.spec = spec
        self.root = Path(os.path.realpath(spec.root))
        self.package = spec.package
        self.notes: list = []

    def fix_hint(self) -> str:
        """The one line that makes Python import this checkout (computed by the orchestrator: run_hint)."""
        return self.spec.import_hint or f"put {self.root} first on PYTHONPATH"

    def run(self) -> str:
        """Message on success; raises RuntimeError with the reason on failure."""
        origin = _located(self.package)
        if origin is None or not _inside(origin, self.root):
            raise RuntimeError(f"`import {self.package}` in {sys.executable} loads {origin or 'nothing'}, not the "
                               f"checkout at {self.root}, even with the checkout first on PYTHONPATH; "
                               f"{self.fix_hint()}")
        if self.spec.shadow_check:
            plain = _located(self.package, _without_first(sys.path, self.root))
            if plain is None or not _inside(plain, self.root):
                self.notes.append(f"without PYTHONPATH, `import {self.package}` in {sys.executable} loads "
                                  f"{plain or 'nothing'} instead of this checkout ({origin}): your own runs would not "
                                  f"use the patched code; {self.fix_hint()}")
                if self.spec.ddp_note:
                    self.notes.append(f"{self.spec.ddp_note} ({plain or 'none'}); {self.fix_hint()}")
        try:
            parser = importlib.import_module(self.spec.parser_module)
        except Exception as exc:
            raise RuntimeError(f"importing {self.spec.parser_module} from the checkout failed: "
                               f"{type(exc).__name__}: {exc}; install the target's requirements into "
                               f"{sys.executable}") from None
        if not _inside(getattr(parser, "__file__", "") or "", self.root):
            raise RuntimeError(f"{self.spec.parser_module} was loaded from {parser.__file__}, not from the checkout "
                               f"at {self.root}; {self.fix_hint()}")
        top = sys.modules.get(self.package)
        version = getattr(top, "__version__", "") if top is not None else ""
        return f"{self.package}{' ' + version if version else ''} from {Path(origin).parent}"
