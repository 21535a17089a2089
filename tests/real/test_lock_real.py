"""The README's CI steps, in order, on fresh copies of a real target: apply -> lock -> (fresh copy)
apply --locked -> verify --locked --quick; and verify --locked catches a changed parameter count."""

import shutil
import subprocess
import sys

import pytest

import upstream
from lookalikes import tree_snapshot

pytestmark = pytest.mark.real


def yolopatch(*args):
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True)


def test_documented_ci_steps_reproduce_and_verify(tmp_path):
    source = upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS)
    dev = upstream.fresh_copy(source, tmp_path / "dev")
    assert yolopatch("apply", "mobilenetv4", "bifpn", "--repo", dev).returncode == 0
    locked = yolopatch("lock", "--repo", dev)
    assert locked.returncode == 0, locked.stderr
    lock_text = (dev / "yolopatch.lock").read_text()
    assert "[[models]]" in lock_text and "gflops = " in lock_text

    copies = []
    for name in ("ci-1", "ci-2"):
        ci = upstream.fresh_copy(source, tmp_path / name)
        shutil.copy(dev / "yolopatch.lock", ci / "yolopatch.lock")
        result = yolopatch("apply", "--locked", "--repo", ci)
        assert result.returncode == 0, result.stderr
        copies.append(ci)
    assert tree_snapshot(copies[0]) == tree_snapshot(copies[1])

    ci = copies[0]
    checked = yolopatch("verify", "--locked", "--quick", "--one-scale", "--repo", ci)
    assert checked.returncode == 0, checked.stderr[-2000:]

    lock = ci / "yolopatch.lock"
    text = lock.read_text()
    first = text.index("params = ") + len("params = ")
    end = text.index("\n", first)
    lock.write_text(text[:first] + str(int(text[first:end]) + 1) + text[end:])
    drifted = yolopatch("verify", "--locked", "--quick", "--one-scale", "--repo", ci)
    assert drifted.returncode == 4
    assert "differ from yolopatch.lock" in drifted.stderr and "parameters" in drifted.stderr
