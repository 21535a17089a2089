"""The issue's case 1 and a read-only folder on a real ultralytics release: the user's function in tasks.py
and `nc: 2` in the generated YAML survive `apply slimneck` (with and without --force) and `revert`; an
overlapping edit is refused and shown; a read-only `ultralytics/nn/` is refused before anything is written
when mode bits apply."""

import re
import subprocess
import sys

import pytest

import unprivileged
import upstream
from lookalikes import tree_snapshot

pytestmark = pytest.mark.real

TASKS = "ultralytics/nn/tasks.py"
YAML = "ultralytics/cfg/models/yolopatch/yolov8-mobilenetv4.yaml"
FUNCTION = b"\n\ndef count_my_layers(model):\n    return len(model.model)\n"


def yolopatch(*args):
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True)


def fresh(tmp_path, name):
    return upstream.fresh_copy(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path / name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """tasks.py as yolopatch writes it for mobilenetv4 + slimneck on the pristine release."""
    root = fresh(tmp_path_factory.mktemp("reference"), "repo")
    assert yolopatch("apply", "mobilenetv4", "slimneck", "--repo", root).returncode == 0
    return (root / TASKS).read_bytes()


def set_classes(path):
    text = path.read_bytes()
    assert re.search(rb"(?m)^nc: 80", text)
    path.write_bytes(re.sub(rb"(?m)^nc: 80.*$", b"nc: 2  # my two classes", text, count=1))
    return path.read_bytes()


@pytest.mark.parametrize("force", [False, True])
def test_case_1_keeps_the_function_and_nc(tmp_path, reference, force):
    root = fresh(tmp_path, "repo")
    pristine = tree_snapshot(root)
    assert yolopatch("apply", "mobilenetv4", "--repo", root).returncode == 0
    tasks, yaml = root / TASKS, root / YAML
    tasks.write_bytes(tasks.read_bytes() + FUNCTION)
    tuned = set_classes(yaml)

    result = yolopatch("apply", "slimneck", "--repo", root, *(["--force"] if force else []))
    assert result.returncode == 0, result.stderr
    assert tasks.read_bytes() == reference + FUNCTION
    assert yaml.read_bytes() == tuned
    assert not list(root.rglob("*.orig*"))

    result = yolopatch("revert", "--repo", root)
    assert result.returncode == 0, result.stderr
    assert tasks.read_bytes() == pristine[TASKS][1] + FUNCTION
    assert yaml.read_bytes() == tuned and f"kept {YAML}" in result.stderr
    after = tree_snapshot(root)
    changed = {rel for rel in set(after) | set(pristine) if after.get(rel) != pristine.get(rel)}
    assert changed == {TASKS, YAML, "ultralytics/cfg/models/yolopatch"}


def test_an_overlapping_edit_is_refused_and_shown(tmp_path):
    root = fresh(tmp_path, "repo")
    assert yolopatch("apply", "mobilenetv4", "--repo", root).returncode == 0
    tasks = root / TASKS
    lines = tasks.read_bytes().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if b"import MobileNetV4ConvSmall" in line)
    lines[index] = lines[index].rstrip(b"\n") + b"  # my backbones\n"
    tasks.write_bytes(b"".join(lines))
    before = tree_snapshot(root)
    result = yolopatch("apply", "slimneck", "--repo", root)
    assert result.returncode == 3
    assert re.search(rf"{TASKS}: your edits at lines? {index + 1}(-\d+)? overlap yolopatch's changes", result.stderr)
    assert tree_snapshot(root) == before
    shown = yolopatch("apply", "slimneck", "--repo", root, "--diff")
    assert shown.returncode == 3 and "+<<<<<<< yours" in shown.stdout and "+>>>>>>> yolopatch" in shown.stdout
    assert tree_snapshot(root) == before


@pytest.mark.skipif(unprivileged.available() is not None, reason=str(unprivileged.available()))
def test_a_read_only_nn_folder_is_refused_and_nothing_written(tmp_path):
    root = fresh(tmp_path, "repo")
    (root / "ultralytics" / "nn").chmod(0o555)
    try:
        before = tree_snapshot(root)
        result = unprivileged.yolopatch("apply", "mobilenetv4", "--repo", root)
        assert result.returncode == 3, result.stderr
        assert "cannot write in ultralytics/nn/" in result.stderr and "nothing was written" in result.stderr
        assert tree_snapshot(root) == before
    finally:
        (root / "ultralytics" / "nn").chmod(0o755)
