"""`yolopatch demo`: the whole round trip on a scratch copy of the installed ultralytics package."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import api
from .errors import RefusedError, VerifyError


def _installed_ultralytics() -> Path:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise RefusedError("the demo patches a copy of the installed ultralytics package: pip install ultralytics")
    return Path(list(spec.submodule_search_locations)[0])


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(path.relative_to(root).as_posix().encode() + oct(path.lstat().st_mode).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _build(root: Path, yamls: list[str]) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", YOLO_OFFLINE="1",
               YOLO_CONFIG_DIR=str(root.parent / "config"))
    probe = Path(__file__).with_name("probe.py")
    result = subprocess.run([sys.executable, str(probe), "ultralytics", *yamls], cwd=root, env=env,
                            capture_output=True, text=True)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def run_demo(recipe: str, keep: Path | None, say) -> None:
    source = _installed_ultralytics()
    scratch = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="yolopatch-demo-"))
    root = scratch / "checkout"
    if root.exists():
        raise RefusedError(f"{root} already exists; name an empty folder with --keep")
    try:
        shutil.copytree(source, root / "ultralytics", ignore=shutil.ignore_patterns("__pycache__"))
        say(f"copied {source} -> {root / 'ultralytics'}")
        before = _tree_digest(root)
        result = api.apply(root, [recipe])
        for line in result.summary_lines:
            say(line)
        say(result.message)
        yamls = [c.rel for c in result.changes if c.rel.endswith(".yaml")]
        built = _build(root, yamls)
        for item in built:
            if item["ok"]:
                say(f"built   {Path(item['yaml']).name}: {item['params']:,} parameters, strides {item['strides']}")
            else:
                say(f"FAILED  {Path(item['yaml']).name}: {item['error']}")
        if keep:
            say(f"patched copy left in {root}; `yolopatch revert --repo {root}` restores it")
            return
        say(api.revert(root).message)
        identical = _tree_digest(root) == before
        say("byte-identical to the copy before apply: " + ("yes" if identical else "NO"))
        if len(built) != len(yamls) or not all(item["ok"] for item in built) or not identical:
            raise VerifyError("the demo round trip failed (see above)")
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
