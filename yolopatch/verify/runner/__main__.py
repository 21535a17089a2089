"""Entry point in the target's interpreter: `python <runner folder>/__main__.py SPEC.json`.

Python puts this script's folder first on sys.path; it is removed before anything else is imported, and
the runner package is mounted under a private name (MOUNT) whose only search location is the verify
folder: `MOUNT.runner.*` are this folder's modules and `MOUNT.protocol` the protocol they share with the
orchestrator. No other part of yolopatch is imported, and no folder of ours stays on sys.path.
"""

import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
if sys.path and os.path.realpath(sys.path[0] or os.curdir) == HERE:
    del sys.path[0]

MOUNT = "_yolopatch_verify"


def mount():
    """The runner's `main` module, imported as MOUNT.runner.main (or in place when run with -m)."""
    import importlib
    import importlib.machinery
    import types

    if __package__:  # python -m yolopatch.verify.runner: the package is already importable
        return importlib.import_module(f"{__package__}.main")
    if MOUNT not in sys.modules:
        parent = types.ModuleType(MOUNT, "yolopatch verify, as mounted in the target's interpreter")
        parent.__path__ = [os.path.dirname(HERE)]
        parent.__spec__ = importlib.machinery.ModuleSpec(MOUNT, None, is_package=True)
        parent.__spec__.submodule_search_locations = parent.__path__
        sys.modules[MOUNT] = parent
    return importlib.import_module(f"{MOUNT}.runner.main")


if __name__ == "__main__":
    sys.exit(mount().main(sys.argv[1]))
