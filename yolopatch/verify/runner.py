"""The script `yolopatch verify` runs INSIDE the target's interpreter: `python runner.py spec.json`.

It imports the standard library, torch and the target, never yolopatch (the target's interpreter may not
have it); its helpers are the runner_*.py files next to it. The spec (JSON) says what to check; the
result goes to the JSON file the spec names; progress goes to stderr as lines starting with
"@yolopatch-verify ". Modes:

  verify  the ladder on the (patched) checkout: import, names, stock fingerprints, build, shapes,
          figures, train, checkpoint (+ one fresh `reload` interpreter), export
  stock   only the stock fingerprints (run on the pristine scratch copy)
  reload  load checkpoints with the target's loader and compare outputs (the fresh interpreter)
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This script's folder also holds the yolopatch side of verify: it must never shadow the target's modules.
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == HERE:
    del sys.path[0]


def helpers(*names: str) -> list:
    """Import the runner's own modules (all named runner_*), with their folder on sys.path only meanwhile."""
    sys.path.insert(0, str(HERE))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(HERE))


def _write(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def _import_step(spec: dict, env) -> tuple:
    """Step 1. Returns (check record, notes, whether the ladder can run)."""
    start = time.perf_counter()

    def record(status: str, message: str) -> dict:
        if spec.get("mode", "verify") == "verify":
            env.progress(f"import  {status:<6} {message}")
        return {"status": status, "message": message, "seconds": round(time.perf_counter() - start, 2)}

    try:
        import torch
    except Exception as exc:
        return record("failed", f"cannot import torch in {sys.executable}: {type(exc).__name__}: {exc}"), [], False
    env.set_threads(torch)
    try:
        (imports,) = helpers("runner_imports")
        helpers("runner_ladder", "runner_fresh", "runner_stock", "runner_target")
    except ImportError as exc:  # e.g. torch.utils.flop_counter arrived in torch 2.1
        return record("failed", f"the verify runner needs torch >= 2.1 (found {torch.__version__}): {exc}"), [], False
    check = imports.ImportCheck(spec)
    try:
        return record("passed", check.run()), check.notes, True
    except RuntimeError as exc:
        return record("failed", str(exc)), check.notes, False


def _second_interpreter(spec: dict, ready: bool, import_record: dict, env) -> dict:
    """The `reload` mode: the checkout's stock fingerprints first, then the checkpoints once they exist."""
    (fresh,) = helpers("runner_fresh")
    if not ready:
        items = fresh.wait_for_items(spec)
        failed = {"status": "failed", "message": import_record["message"], "seconds": 0.0}
        return {"stock": {}, "reload": {item["name"]: dict(failed) for item in items}}
    stock, target = helpers("runner_stock", "runner_target")
    adapter = target.make_adapter(spec)
    fingerprints = {}
    if spec.get("stock"):
        start = time.perf_counter()
        fingerprints = stock.fingerprints(adapter, spec)
        env.progress(f"stock   built {', '.join(fingerprints)} in the checkout ({time.perf_counter() - start:.1f}s)")
    return {"stock": fingerprints, "reload": fresh.reload_mode(adapter, fresh.wait_for_items(spec))}


def main(spec_path: str) -> int:
    (env,) = helpers("runner_env")  # first: it must act before torch or the target is imported
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    env.block_network()
    env.seed_fonts(os.environ.get("YOLO_CONFIG_DIR") or os.getcwd())
    import_record, notes, ready = _import_step(spec, env)
    mode = spec.get("mode", "verify")
    runner = {"python": sys.executable, "version": sys.version.split()[0]}
    if "torch" in sys.modules:
        runner.update(torch=sys.modules["torch"].__version__, threads=sys.modules["torch"].get_num_threads())
    result = {"runner": runner, "checks": {"import": import_record}, "notes": notes, "stock": {}, "models": []}
    if mode == "reload":
        result = _second_interpreter(spec, ready, import_record, env)
    elif ready and mode == "verify":
        (ladder,) = helpers("runner_ladder")
        result.update(ladder.Ladder(spec, Path(__file__).resolve()).run())
    elif ready and mode == "stock":
        stock, target = helpers("runner_stock", "runner_target")
        result["stock"] = stock.fingerprints(target.make_adapter(spec), spec)
    _write(spec["result"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
