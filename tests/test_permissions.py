"""Preflight and honest rollback, run the way a non-root user runs: mode bits apply (see unprivileged.py).

A folder or file this process cannot write is refused before anything is written (exit 3, naming it);
a failure injected at every write of a run restores every file (exit 123), or says which files are not
restored (exit 125) and `yolopatch revert` then brings the checkout back.
"""

import json

import pytest

import unprivileged
from lookalikes import FIXTURE_RECIPES, make_target, tree_snapshot

pytestmark = pytest.mark.skipif(unprivileged.available() is not None, reason=str(unprivileged.available()))


def apply_toy(root, *extra):
    return unprivileged.yolopatch("--recipes-dir", FIXTURE_RECIPES, "apply", "toy", "--repo", root, *extra)


def one_line_refusal(result, *fragments):
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def target(tmp_path):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    yield root
    for path in [root, *root.rglob("*")]:  # let pytest clean up
        if path.is_dir():
            path.chmod(0o755)


@pytest.mark.parametrize("folder, named", [
    ("ultralytics/nn", "cannot write in ultralytics/nn/"),                # tasks.py is replaced there
    ("ultralytics/nn/modules", "cannot write in ultralytics/nn/modules/"),  # module files are created there
    ("ultralytics/cfg/models", "cannot write in ultralytics/cfg/models/"),  # the YAML folder is created there
    (".", "cannot write in "),                                              # .yolopatch/ goes there
])
def test_a_read_only_folder_is_refused_before_writing(target, folder, named):
    (target / folder).chmod(0o555)
    before = tree_snapshot(target)
    result = apply_toy(target)
    one_line_refusal(result, named, "nothing was written")
    if folder == ".":
        assert f"cannot write in {target}/" in result.stderr
    assert tree_snapshot(target) == before


def test_a_read_only_parser_file_is_refused(target):
    tasks = target / "ultralytics" / "nn" / "tasks.py"
    tasks.chmod(0o444)
    before = tree_snapshot(target)
    one_line_refusal(apply_toy(target), "ultralytics/nn/tasks.py is read-only")
    assert tree_snapshot(target) == before


def test_revert_into_a_read_only_folder_is_refused(target):
    assert apply_toy(target).returncode == 0
    (target / "ultralytics" / "nn" / "modules").chmod(0o555)
    before = tree_snapshot(target)
    one_line_refusal(unprivileged.yolopatch("revert", "--repo", target), "cannot write in ultralytics/nn/modules/")
    assert tree_snapshot(target) == before


def test_the_run_as_root_would_have_written(target):
    """The refusals above come from the mode bits, not from the checkout: with write access restored the
    same unprivileged run applies."""
    (target / "ultralytics" / "nn").chmod(0o555)
    assert apply_toy(target).returncode == 3
    (target / "ultralytics" / "nn").chmod(0o755)
    result = apply_toy(target)
    assert result.returncode == 0, result.stderr


# One unprivileged interpreter runs every fault in turn (in-process, as tests/conftest.py's `cli` does).
_EVERY_WRITE = r"""
import contextlib, io, json, os, sys
from pathlib import Path
from lookalikes import FIXTURE_RECIPES, tree_snapshot
from yolopatch.cli import main

root, restore_fails = Path(sys.argv[1]), sys.argv[2] == "yes"

def run(fault, *args):
    os.environ["YOLOPATCH_FAULT"] = fault
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main(["--recipes-dir", str(FIXTURE_RECIPES), *args, "--repo", str(root)])
    except SystemExit as exc:
        return exc.code, err.getvalue()
    finally:
        os.environ.pop("YOLOPATCH_FAULT")

before = tree_snapshot(root)
report = []
for k in range(1, 80):
    code, err = run(f"fail-write:{k}" + (",fail-restore:1" if restore_fails else ""), "apply", "toy")
    entry = {"k": k, "code": code, "err": err, "identical": tree_snapshot(root) == before,
             "changed": sorted(rel for rel, value in tree_snapshot(root).items() if before.get(rel) != value)}
    if code == 125:
        entry["revert"], entry["revert_err"] = run("", "revert")
        entry["restored"] = tree_snapshot(root) == before
    report.append(entry)
    if code == 0:
        break
print(json.dumps(report))
"""


@pytest.mark.parametrize("restore_fails", [False, True], ids=["rollback-works", "rollback-fails"])
def test_a_failure_at_every_write_as_a_non_root_user(target, restore_fails):
    result = unprivileged.python(_EVERY_WRITE, target, "yes" if restore_fails else "no")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report[-1]["code"] == 0 and len(report) > 10, report[-1]
    for entry in report[:-1]:
        if entry["code"] == 123:
            assert entry["identical"], f"exit 123 but not restored after a failure at write {entry['k']}"
            assert "every file was restored" in entry["err"]
            continue
        assert restore_fails and entry["code"] == 125, entry
        assert "not restored" in entry["err"] and "`yolopatch revert` finishes the job" in entry["err"]
        for rel in entry["changed"]:
            assert rel.startswith(".yolopatch") or rel in entry["err"], f"{rel} changed but not named: {entry}"
        assert entry["revert"] == 0 and entry["restored"], entry
    if restore_fails:
        assert sum(entry["code"] == 125 for entry in report) > 10
