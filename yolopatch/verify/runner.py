"""The script `yolopatch verify` runs INSIDE the target's interpreter: `python runner.py spec.json`.

It imports the standard library, torch and the target, never yolopatch (the target's interpreter may not
have it); its helpers are the runner_*.py files next to it. The spec (JSON) says what to check; the
results go to the JSON file the spec names; progress goes to stderr as lines starting with
"@yolopatch-verify ". Modes:

  verify  the ladder on the (patched) checkout: import, names, stock fingerprints, build, shapes,
          figures, train, checkpoint (+ one fresh `reload` interpreter), export
  stock   only the stock fingerprints (run on the pristine scratch copy)
  reload  load checkpoints with the target's loader and compare outputs (the fresh interpreter)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _import_helpers():
    # sys.path[0] is this script's folder. It holds the yolopatch side of verify too, so it is on the path
    # only while the runner's own helpers (all named runner_*) are imported, never while the target imports.
    del sys.path[0]
    sys.path.insert(0, str(HERE))
    try:
        import runner_env  # noqa: F401  (first: nothing else imported yet)
    finally:
        sys.path.remove(str(HERE))
    return runner_env


def _write(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def _import_step(spec: dict, env) -> tuple:
    """(check record, notes, ladder module or None)."""
    start = time.perf_counter()
    sys.path.insert(0, str(HERE))
    try:
        import torch

        env.set_threads(torch)
        import runner_imports
        import runner_ladder
    except Exception as exc:
        message = f"cannot import torch in {sys.executable}: {type(exc).__name__}: {exc}"
        return {"status": "failed", "message": message, "seconds": round(time.perf_counter() - start, 2)}, [], None
    finally:
        sys.path.remove(str(HERE))
    check = runner_imports.ImportCheck(spec)
    try:
        message, status = check.run(), "passed"
    except RuntimeError as exc:
        message, status = str(exc), "failed"
    record = {"status": status, "message": message, "seconds": round(time.perf_counter() - start, 2)}
    if spec.get("mode", "verify") == "verify":
        env.progress(f"import  {status:<6} {message}")
    return record, check.notes, runner_ladder


def main(spec_path: str) -> int:
    env = _import_helpers()
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    env.block_network()
    env.seed_fonts(os.environ.get("YOLO_CONFIG_DIR") or os.getcwd())
    import_record, notes, ladder = _import_step(spec, env)
    runner = {"python": sys.executable, "version": sys.version.split()[0]}
    if ladder is not None:
        import torch

        runner.update(torch=torch.__version__, threads=torch.get_num_threads())
    result = {"runner": runner, "checks": {"import": import_record}, "notes": notes, "stock": {}, "models": []}
    mode = spec.get("mode", "verify")
    if import_record["status"] != "passed":
        if mode == "verify":
            result["models"] = ladder.skipped_models(spec, "import failed") if ladder else [
                {"name": Path(y["path"]).stem, "yaml": y["path"], "scale": None, "kind": y.get("kind", "detect"),
                 "source": y.get("source", ""), "steps": {}} for y in spec["yamls"]]
        elif mode == "reload":
            result = {item["name"]: {"status": "failed", "message": import_record["message"], "seconds": 0.0}
                      for item in spec["items"]}
    elif mode == "verify":
        result.update(ladder.Ladder(spec, Path(__file__).resolve()).run())
    elif mode == "stock":
        from runner_stock import fingerprints
        from runner_target import make_adapter

        result["stock"] = fingerprints(make_adapter(spec), spec)
    elif mode == "reload":
        result = ladder.reload_mode(spec)
    _write(spec["result"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
