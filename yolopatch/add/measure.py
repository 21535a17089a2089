"""Backbones' output channels and strides, measured in the target's own interpreter (a subprocess: the
user's file is imported there, never in yolopatch's process)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from ..errors import RefusedError
from ..resources import runtime_dir
from ..targets import Target

PROBE = Path(__file__).resolve().parent / "probe_backbones.py"
TIMEOUT = 600


def measure_backbones(target: Target, module_source: bytes, file_name: str, classes: list[str],
                      python: str) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Class -> (channels, strides) of its outputs with 3 input channels and default arguments."""
    from ..verify.process import runner_env  # the environment verify gives the target's interpreter

    with tempfile.TemporaryDirectory(prefix="yolopatch-add-") as tmp:
        work = Path(tmp)
        module_path = work / file_name
        module_path.write_bytes(module_source)
        env = runner_env(target.root, work)
        try:
            result = subprocess.run([python, str(PROBE), str(runtime_dir() / "yolopatch_support.py"), str(module_path),
                                     *classes], cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RefusedError(f"measuring {', '.join(classes)} in {python} failed ({exc}); nothing was written") from None
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RefusedError(f"measuring {', '.join(classes)} in {python} failed ({last}); nothing was written")
    report = json.loads(lines[-1])
    if "_" in report:
        raise RefusedError(f"{file_name}: {report['_']} (in {python}); nothing was written")
    measured = {}
    for name in classes:
        entry = report.get(name, {"error": "not reported"})
        if "error" in entry:
            raise RefusedError(f"{name} looks like a backbone (its forward returns several maps) but building it "
                               f"with 3 input channels and measuring its outputs failed: {entry['error']}; pass "
                               f"--role {name}=ROLE if it is not one; nothing was written")
        measured[name] = (tuple(entry["channels"]), tuple(entry["strides"]))
    return measured
