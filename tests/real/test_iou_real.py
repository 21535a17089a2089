"""IoU-loss recipes on real releases (a sample; tests/iou_sweep.py runs every recipe on every release):
apply, verify's `loss` step passes in the target's interpreter, a hand-made wrong wiring fails it (exit 4),
revert leaves the tree byte-identical."""

import subprocess
import sys

import pytest

import upstream
from lookalikes import tree_snapshot

pytestmark = pytest.mark.real


def yolopatch(*args):
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


def test_newest_ultralytics_siou_and_a_wrong_wiring(tmp_path):
    root = upstream.fresh_copy(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path / "repo")
    before = tree_snapshot(root)
    assert yolopatch("apply", "siou", "--option", "theta=3", "--repo", root).returncode == 0
    checked = yolopatch("verify", "--quick", "--repo", root)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "= siou's formula on" in checked.stdout and "CIoU would give" in checked.stdout

    loss = root / "ultralytics" / "utils" / "loss.py"
    patched = loss.read_text()
    assert "xywh=False, theta=3.0)" in patched
    loss.write_text(patched.replace("xywh=False, theta=3.0)", "xywh=False, theta=4.0)"))   # not what was applied
    wrong = yolopatch("verify", "--quick", "--repo", root)
    assert wrong.returncode == 4 and "verify failed at loss: the box loss of yolov8n is" in wrong.stderr
    loss.write_text(patched)

    assert yolopatch("revert", "--repo", root).returncode == 0
    assert tree_snapshot(root) == before


def test_yolov5_upstream_layout_mpdiou(tmp_path):
    root = upstream.fresh_copy(upstream.upstream_yolov5("7.0.14"), tmp_path / "repo")
    before = tree_snapshot(root)
    assert yolopatch("apply", "mpdiou", "--repo", root).returncode == 0
    checked = yolopatch("verify", "--quick", "--repo", root)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "yolov5s: box loss" in checked.stdout and "= mpdiou's formula on" in checked.stdout
    assert yolopatch("revert", "--repo", root).returncode == 0
    assert tree_snapshot(root) == before
