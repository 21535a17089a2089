"""The engine's guarantees on look-alike checkouts of every anchor shape (GUIDE §5)."""

import os
import shutil
import subprocess

import pytest

from lookalikes import FIXTURE_RECIPES, STYLES, make_target, tree_snapshot


@pytest.fixture(params=STYLES)
def target(request, tmp_path):
    return make_target(tmp_path / "repo", request.param)


def parser_file(root):
    return next(p for p in (root / "models" / "yolo.py", root / "ultralytics" / "nn" / "tasks.py") if p.exists())


def test_apply_then_revert_is_byte_identical(cli, target):
    before = tree_snapshot(target)
    code, _, err = cli("apply", "toy", "--repo", target)
    assert code == 0, err
    assert tree_snapshot(target) != before
    compile(parser_file(target).read_bytes(), "parser", "exec")
    code, _, err = cli("revert", "--repo", target)
    assert code == 0, err
    assert tree_snapshot(target) == before


def test_second_apply_is_a_noop(cli, target):
    cli("apply", "toy", "--repo", target)
    patched = tree_snapshot(target)
    code, _, err = cli("apply", "toy", "--repo", target)
    assert code == 0
    assert "already applied" in err
    assert tree_snapshot(target) == patched


def test_check_dry_run_and_diff_write_nothing(cli, target):
    before = tree_snapshot(target)
    assert cli("apply", "toy", "--repo", target, "--check")[0] == 1
    assert cli("apply", "toy", "--repo", target, "--dry-run")[0] == 0
    code, out, _ = cli("apply", "toy", "--repo", target, "--diff")
    assert code == 0 and out.startswith("diff --git")
    assert tree_snapshot(target) == before
    cli("apply", "toy", "--repo", target)
    assert cli("apply", "toy", "--repo", target, "--check")[0] == 0


@pytest.mark.parametrize("crlf", [False, True])
def test_diff_applied_with_git_gives_the_same_bytes(cli, tmp_path, crlf):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    a = make_target(tmp_path / "a", "v5-set", crlf=crlf)
    b = make_target(tmp_path / "b", "v5-set", crlf=crlf)
    code, diff, _ = cli("apply", "toy", "--repo", a, "--diff")
    assert code == 0
    (tmp_path / "patch.diff").write_bytes(diff.encode())
    subprocess.run(["git", "apply", "--whitespace=nowarn", str(tmp_path / "patch.diff")], cwd=a, check=True)
    cli("apply", "toy", "--repo", b)
    shutil.rmtree(b / ".yolopatch")
    assert tree_snapshot(a) == tree_snapshot(b)


def test_crlf_and_mode_bits_are_kept(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-set", crlf=True)
    tasks = root / "ultralytics" / "nn" / "tasks.py"
    os.chmod(tasks, 0o755)
    before = tree_snapshot(root)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    patched = tasks.read_bytes()
    assert b"\r\n" in patched and b"\n" not in patched.replace(b"\r\n", b"")
    assert tasks.stat().st_mode & 0o777 == 0o755
    cli("revert", "--repo", root)
    assert tree_snapshot(root) == before


def test_revert_keeps_the_users_own_lines(cli, target):
    """A line the user added to the patched parser file survives revert; every line yolopatch added goes."""
    before = tree_snapshot(target)
    path = parser_file(target)
    pristine = path.read_bytes()
    cli("apply", "toy", "--repo", target)
    path.write_bytes(path.read_bytes() + b"# my edit\n")
    code, _, err = cli("revert", "--repo", target)
    assert code == 0, err
    assert path.read_bytes() == pristine + b"# my edit\n"
    rel = path.relative_to(target).as_posix()
    after = tree_snapshot(target)
    assert {k: v for k, v in after.items() if k != rel} == {k: v for k, v in before.items() if k != rel}


def test_apply_refuses_an_existing_destination_with_other_bytes(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    (root / "ultralytics" / "nn" / "modules" / "toy.py").write_text("# someone else's toy\n")
    before = tree_snapshot(root)
    code, _, err = cli("apply", "toy", "--repo", root)
    assert code == 3 and "toy.py already exists" in err
    assert tree_snapshot(root) == before
    code, _, err = cli("apply", "toy", "--repo", root, "--force")
    assert code == 0, err
    assert "ultralytics/nn/modules/toy.py had other content" in err and ".yolopatch/originals/" in err
    assert cli("revert", "--repo", root)[0] == 0
    assert tree_snapshot(root) == before


def test_apply_refuses_a_missing_anchor_and_names_it(cli, tmp_path):
    root = make_target(tmp_path / "repo", "v5-list")
    yolo = root / "models" / "yolo.py"
    yolo.write_text(yolo.read_text().replace("        else:\n            c2 = ch[f]\n", ""))
    before = tree_snapshot(root)
    code, _, err = cli("apply", "toy", "--repo", root)
    assert code == 3 and "else: c2 = ch[f]" in err
    assert "Traceback" not in err
    assert tree_snapshot(root) == before


def test_partial_revert_in_any_order(cli, tmp_path):
    fixtures = FIXTURE_RECIPES
    assert (fixtures / "toy").is_dir() and (fixtures / "toyblock").is_dir()
    for order in (["toy", "toyblock"], ["toyblock", "toy"]):
        root = make_target(tmp_path / "-".join(order), "ul-frozenset")
        pristine = tree_snapshot(root)
        only_other = make_target(tmp_path / f"only-{order[1]}", "ul-frozenset")
        cli("apply", order[1], "--repo", only_other)
        cli("apply", "toy", "toyblock", "--repo", root)
        assert cli("revert", order[0], "--repo", root)[0] == 0
        strip = lambda snap: {k: v for k, v in snap.items() if not k.startswith(".yolopatch")}  # noqa: E731
        assert strip(tree_snapshot(root)) == strip(tree_snapshot(only_other))
        assert cli("revert", order[1], "--repo", root)[0] == 0
        assert tree_snapshot(root) == pristine


def test_apply_order_does_not_matter(cli, tmp_path):
    a = make_target(tmp_path / "a", "v5-master")
    b = make_target(tmp_path / "b", "v5-master")
    cli("apply", "toy", "toyblock", "--repo", a)
    cli("apply", "toyblock", "--repo", b)
    cli("apply", "toy", "--repo", b)
    strip = lambda snap: {k: v for k, v in snap.items() if not k.startswith(".yolopatch")}  # noqa: E731
    assert strip(tree_snapshot(a)) == strip(tree_snapshot(b))


def test_a_failure_at_any_write_leaves_the_tree_as_it_was(tmp_path, cli, monkeypatch):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    before = tree_snapshot(root)
    for k in range(1, 80):
        monkeypatch.setenv("YOLOPATCH_FAULT", f"fail-write:{k}")
        code, _, err = cli("apply", "toy", "--repo", root)
        if code == 0:  # k is past the last write: the run completed
            assert k > 10
            break
        assert code == 123, err
        assert "restored" in err
        assert tree_snapshot(root) == before, f"tree changed after a failure at write {k}"
    else:
        pytest.fail("apply never completed")


def test_a_failure_during_revert_leaves_the_patched_tree(tmp_path, cli, monkeypatch):
    root = make_target(tmp_path / "repo", "v5-set")
    assert cli("apply", "toy", "--repo", root)[0] == 0
    patched = tree_snapshot(root)
    for k in range(1, 80):
        monkeypatch.setenv("YOLOPATCH_FAULT", f"fail-write:{k}")
        code, _, err = cli("revert", "--repo", root)
        if code == 0:
            assert k > 10
            break
        assert code == 123, err
        assert tree_snapshot(root) == patched, f"tree changed after a failure at write {k}"
    else:
        pytest.fail("revert never completed")


def test_a_killed_run_is_reported_and_revert_restores_pristine(tmp_path, cli, killable):
    root = make_target(tmp_path / "repo", "ul-set")
    before = tree_snapshot(root)
    for k in range(1, 80):
        code = killable(f"kill-write:{k}", "apply", "toy", "--repo", root)
        if code == 0:
            assert k > 10
            cli("revert", "--repo", root)
            assert tree_snapshot(root) == before
            break
        assert code == 137
        code, out, _ = cli("status", "--repo", root)
        if (root / ".yolopatch" / "journal.json").exists():
            assert "interrupted" in out
            assert cli("apply", "toy", "--repo", root)[0] == 3
        assert cli("revert", "--repo", root)[0] == 0
        assert tree_snapshot(root) == before, f"not pristine after a kill at write {k}"
    else:
        pytest.fail("apply never completed")


def test_a_killed_revert_is_finished_by_the_next_revert(tmp_path, cli, killable):
    root = make_target(tmp_path / "repo", "v5-list")
    before = tree_snapshot(root)
    for k in range(1, 80):
        assert cli("apply", "toy", "--repo", root)[0] == 0
        code = killable(f"kill-write:{k}", "revert", "--repo", root)
        if code == 0:
            assert tree_snapshot(root) == before
            break
        assert code == 137
        status = cli("status", "--repo", root)[1]
        if (root / ".yolopatch" / "journal.json").exists():
            assert "interrupted" in status
        else:  # killed before the journal: nothing was touched yet
            assert "applied: toy" in status
        assert cli("revert", "--repo", root)[0] == 0
        assert tree_snapshot(root) == before, f"not pristine after a kill at revert write {k}"
    else:
        pytest.fail("revert never completed")


def _outside_state(snapshot: dict) -> dict:
    return {k: v for k, v in snapshot.items() if not k.startswith(".yolopatch")}


def test_a_failing_rollback_names_what_is_not_restored_and_revert_finishes(tmp_path, cli, monkeypatch):
    """Writing fails at write k and the first restoring write fails too: exit 125 names every path left
    changed, the journal stays, and `yolopatch revert` brings the checkout back to pristine."""
    root = make_target(tmp_path / "repo", "v5-master")
    before = tree_snapshot(root)
    incomplete = 0
    for k in range(1, 80):
        monkeypatch.setenv("YOLOPATCH_FAULT", f"fail-write:{k},fail-restore:1")
        code, _, err = cli("apply", "toy", "--repo", root)
        monkeypatch.delenv("YOLOPATCH_FAULT")
        if code == 0:
            assert k > 10
            break
        if code == 123:  # the failure came before anything was written: nothing to restore
            assert k == 1 and tree_snapshot(root) == before
            continue
        assert code == 125, err
        incomplete += 1
        assert "not restored" in err and "`yolopatch revert` finishes the job" in err
        left = [rel for rel, value in tree_snapshot(root).items() if before.get(rel) != value]
        assert left, "125 reported although every path was restored"
        for rel in left:
            if not rel.startswith(".yolopatch/"):
                assert rel in err, f"{rel} is not restored and not named"
        assert cli("revert", "--repo", root)[0] == 0
        assert tree_snapshot(root) == before, f"revert did not finish the job after a failure at write {k}"
    else:
        pytest.fail("apply never completed")
    assert incomplete > 10


def test_a_killed_recovery_is_finished_by_the_next_revert(tmp_path, cli, killable):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    before = tree_snapshot(root)
    for j in range(1, 80):
        assert killable("kill-write:20", "apply", "toy", "--repo", root) == 137
        assert (root / ".yolopatch" / "journal.json").exists()
        assert _outside_state(tree_snapshot(root)) != _outside_state(before), "the kill came before any tree write"
        code = killable(f"kill-restore:{j}", "revert", "--repo", root)
        if code == 0:
            assert j > 3
            assert tree_snapshot(root) == before
            break
        assert code == 137
        if (root / ".yolopatch" / "journal.json").exists():  # else killed while removing the journal: rolled back
            assert "interrupted" in cli("status", "--repo", root)[1]
        assert cli("revert", "--repo", root)[0] == 0
        assert tree_snapshot(root) == before, f"not pristine after a kill at restoring write {j}"
    else:
        pytest.fail("the recovery never completed")


def test_a_failing_recovery_keeps_the_journal_and_says_so(tmp_path, cli, monkeypatch, killable):
    root = make_target(tmp_path / "repo", "ul-set")
    before = tree_snapshot(root)
    assert killable("kill-write:20", "apply", "toy", "--repo", root) == 137
    monkeypatch.setenv("YOLOPATCH_FAULT", "fail-restore:1")
    code, _, err = cli("revert", "--repo", root)
    assert code == 125, err
    assert "rolling back the interrupted run (apply toy) failed" in err and "not restored" in err
    assert (root / ".yolopatch" / "journal.json").exists()
    monkeypatch.delenv("YOLOPATCH_FAULT")
    code, out, _ = cli("status", "--repo", root)
    assert "interrupted" in out and "apply toy" in out
    code, _, err = cli("revert", "--repo", root)
    assert code == 0, err
    assert "rolled back the interrupted run" in err
    assert tree_snapshot(root) == before


def test_rollback_rewrites_only_what_was_written(tmp_path, monkeypatch):
    """The write of `b` failed, so `b` was never touched: restoring rewrites `a` only (a second restoring
    write would fail here), and both files hold their bytes from before."""
    from yolopatch import fsio, journal

    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"B")
    ops = [journal.Op("write", "a", b"A2", 0o644), journal.Op("write", "b", b"B2", 0o644),
           journal.Op("mkdir", "new"), journal.Op("write", "new/c", b"C", 0o644)]
    images = journal.capture(tmp_path, ops)
    journal.perform(tmp_path, ops[0])
    monkeypatch.setenv(fsio.FAULT_ENV, "fail-restore:2")
    fsio.reset_fault_counter()
    assert journal.restore(tmp_path, images) == (1, [])
    assert (tmp_path / "a").read_bytes() == b"A" and (tmp_path / "b").read_bytes() == b"B"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
