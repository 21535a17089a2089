"""Run in the target's interpreter by `yolopatch add` (it imports torch, the target and the user's module
file, never yolopatch): build each backbone class with 3 input channels and its default arguments, and
measure its outputs with the support module's own `measure_outputs` (one 256x256 forward in eval mode).

usage: python probe_backbones.py SUPPORT_PY MODULE_PY CLASS [CLASS ...]
prints one JSON object: {"CLASS": {"channels": [...], "strides": [...]} or {"error": "..."}}
"""

import importlib.util
import json
import sys


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main():
    support_path, module_path, *classes = sys.argv[1:]
    import torch

    torch.set_num_threads(1)
    support = load("yolopatch_support", support_path)
    results = {}
    try:
        module = load("yolopatch_added_module", module_path)
    except Exception as exc:  # the file itself does not import here
        print(json.dumps({"_": f"importing it failed: {type(exc).__name__}: {exc}"}))
        return
    for name in classes:
        try:
            torch.manual_seed(0)
            backbone = getattr(module, name)(3)
            channels, strides = support.measure_outputs(backbone, 3)
            support.row_channels(channels, strides)  # strides must be increasing powers of two
            results[name] = {"channels": list(channels), "strides": list(strides)}
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
