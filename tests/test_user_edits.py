"""User edits are data: a file edited after yolopatch wrote it is merged three ways by every later apply and
revert, left alone when the run does not change yolopatch's version of it, and never discarded without a
copy the user is told about. On the look-alike checkouts with the fixture recipes toy and toyblock."""

import json
import re
import shutil

import pytest

from lookalikes import FIXTURE_RECIPES, make_target, tree_snapshot

FUNCTION = b"\n\ndef my_helper():\n    return 42\n"
STATE = ".yolopatch"


def parser_rel(root):
    return "models/yolo.py" if (root / "models" / "yolo.py").exists() else "ultralytics/nn/tasks.py"


def yaml_rel(root):
    if (root / "models" / "yolo.py").exists():
        return "models/yolov5s-toy.yaml"
    return "ultralytics/cfg/models/yolopatch/yolov8-toy.yaml"


def set_classes(path, nc=2):
    lines = path.read_bytes().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.startswith(b"nc:"))
    lines[index] = b"nc: %d  # my dataset\n" % nc
    path.write_bytes(b"".join(lines))
    return path.read_bytes()


def patched_parser(cli, folder, style, *recipes):
    """The parser file yolopatch writes for `recipes` on a pristine look-alike of `style`."""
    root = make_target(folder, style)
    assert cli("apply", *recipes, "--repo", root)[0] == 0
    return (root / parser_rel(root)).read_bytes()


def without(snapshot, *prefixes):
    return {k: v for k, v in snapshot.items() if not k.startswith(prefixes)}


@pytest.mark.parametrize("style", ["ul-frozenset", "v5-master"])
@pytest.mark.parametrize("force", [False, True])
def test_a_function_and_nc_survive_apply_of_another_recipe_and_revert(cli, tmp_path, style, force):
    """The issue's case 1: after `apply toy` the user adds a function to the parser file and sets nc: 2 in
    the generated YAML; `apply toyblock` (with or without --force) keeps both, and `revert` removes the
    tool's lines, keeps the function, and keeps the user's YAML as theirs."""
    root = make_target(tmp_path / "repo", style)
    pristine = tree_snapshot(root)
    parser, yaml = root / parser_rel(root), root / yaml_rel(root)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    parser.write_bytes(parser.read_bytes() + FUNCTION)
    tuned = set_classes(yaml)

    code, _, err = cli("apply", "toyblock", "--repo", root, *(["--force"] if force else []))
    assert code == 0, err
    assert parser.read_bytes() == patched_parser(cli, tmp_path / "reference", style, "toy", "toyblock") + FUNCTION
    assert yaml.read_bytes() == tuned
    assert f"left {yaml_rel(root)} as you edited it" in err
    assert not list(root.rglob("*.orig*")), "a clean merge keeps no copy"
    status = json.loads(cli("status", "--repo", root, "--json")[1])
    assert sorted(status["edited"]) == sorted([parser_rel(root), yaml_rel(root)])

    code, _, err = cli("revert", "--repo", root)
    assert code == 0, err
    assert parser.read_bytes() == pristine[parser_rel(root)][1] + FUNCTION
    assert yaml.read_bytes() == tuned
    assert f"kept {yaml_rel(root)}" in err
    after = tree_snapshot(root)
    assert not (root / STATE).exists()
    assert without(after, parser_rel(root), yaml_rel(root), "ultralytics/cfg/models/yolopatch") == \
        without(pristine, parser_rel(root))


def test_partial_revert_keeps_the_users_lines(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-set")
    parser = root / parser_rel(root)
    assert cli("apply", "toy", "toyblock", "--repo", root)[0] == 0
    parser.write_bytes(parser.read_bytes() + FUNCTION)
    code, _, err = cli("revert", "toyblock", "--repo", root)
    assert code == 0, err
    assert parser.read_bytes() == patched_parser(cli, tmp_path / "reference", "ul-set", "toy") + FUNCTION


def _edit_the_tools_import_line(parser):
    """Append a comment to the import line yolopatch added for toy; return its 1-based line number."""
    lines = parser.read_bytes().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if b"modules.toy import" in line)
    lines[index] = lines[index].rstrip(b"\n") + b"  # mine\n"
    parser.write_bytes(b"".join(lines))
    return index + 1


@pytest.fixture
def overlapping(cli, tmp_path):
    """toy applied, and the user edited the very line yolopatch's next change (toyblock's import) touches."""
    root = make_target(tmp_path / "repo", "ul-frozenset")
    assert cli("apply", "toy", "--repo", root)[0] == 0
    line = _edit_the_tools_import_line(root / parser_rel(root))
    return root, line


def test_an_overlapping_edit_is_refused_naming_file_and_line(cli, overlapping):
    root, line = overlapping
    before = tree_snapshot(root)
    for mode in ([], ["--dry-run"], ["--check"]):
        code, out, err = cli("apply", "toyblock", "--repo", root, *mode)
        assert code == 3, err
        assert f"ultralytics/nn/tasks.py: your edits at line {line} overlap yolopatch's changes" in err
        assert "nothing was written" in err and "apply with --force" in err and "tasks.py.orig" in err
        assert tree_snapshot(root) == before
    assert "CONFLICT" in cli("apply", "toyblock", "--repo", root, "--dry-run")[2]


def test_diff_shows_the_conflict_then_refuses(cli, overlapping):
    root, _ = overlapping
    before = tree_snapshot(root)
    code, out, err = cli("apply", "toyblock", "--repo", root, "--diff")
    assert code == 3
    assert "+<<<<<<< yours\n" in out and "+=======\n" in out and "+>>>>>>> yolopatch\n" in out
    assert "+from ultralytics.nn.modules.toyblock import ToyBlock2\n" in out
    assert "your edits at line" in err
    assert tree_snapshot(root) == before


def test_force_writes_the_tools_version_and_keeps_the_users_beside_it(cli, tmp_path, overlapping):
    root, _ = overlapping
    parser = root / parser_rel(root)
    users = parser.read_bytes()
    (root / "ultralytics/nn/tasks.py.orig").write_bytes(b"an older copy of mine\n")
    code, _, err = cli("apply", "toyblock", "--repo", root, "--force")
    assert code == 0, err
    assert "kept yours as ultralytics/nn/tasks.py.orig.1" in err
    assert (root / "ultralytics/nn/tasks.py.orig.1").read_bytes() == users
    assert (root / "ultralytics/nn/tasks.py.orig").read_bytes() == b"an older copy of mine\n"
    assert parser.read_bytes() == patched_parser(cli, tmp_path / "reference", "ul-frozenset", "toy", "toyblock")
    assert cli("revert", "--repo", root)[0] == 0  # the parser file is yolopatch's again: restored exactly
    pristine = tree_snapshot(make_target(tmp_path / "pristine", "ul-frozenset"))
    kept = ("ultralytics/nn/tasks.py.orig",)
    assert without(tree_snapshot(root), *kept) == pristine
    assert (root / "ultralytics/nn/tasks.py.orig.1").read_bytes() == users  # the user's copy is never tracked


def test_revert_over_an_overlapping_edit_refuses_and_force_keeps_a_copy(cli, overlapping, tmp_path):
    root, line = overlapping
    parser = root / parser_rel(root)
    users = parser.read_bytes()
    before = tree_snapshot(root)
    code, _, err = cli("revert", "--repo", root)
    assert code == 3
    assert re.search(rf"ultralytics/nn/tasks.py: your edits at lines? {line}(-\d+)? overlap", err), err
    assert "revert with --force to write the reverted file and keep yours as ultralytics/nn/tasks.py.orig" in err
    assert tree_snapshot(root) == before
    code, _, err = cli("revert", "--repo", root, "--force")
    assert code == 0, err
    assert "kept yours as ultralytics/nn/tasks.py.orig" in err
    pristine = tree_snapshot(make_target(tmp_path / "pristine", "ul-frozenset"))
    assert without(tree_snapshot(root), "ultralytics/nn/tasks.py.orig") == pristine
    assert (root / "ultralytics/nn/tasks.py.orig").read_bytes() == users


def test_a_merge_that_is_not_python_is_a_conflict(cli, tmp_path):
    root = make_target(tmp_path / "repo", "v5-set")
    parser = root / parser_rel(root)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    parser.write_bytes(parser.read_bytes() + b"\ndef half_written(:\n")
    before = tree_snapshot(root)
    code, _, err = cli("apply", "toyblock", "--repo", root)
    assert code == 3
    assert "models/yolo.py: merging your edits with yolopatch's changes gives invalid Python" in err
    assert tree_snapshot(root) == before


def test_a_deleted_generated_yaml_stays_deleted(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-tuple")
    pristine = tree_snapshot(root)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    (root / yaml_rel(root)).unlink()
    code, _, err = cli("apply", "toyblock", "--repo", root)
    assert code == 0, err
    assert f"left {yaml_rel(root)} deleted" in err and not (root / yaml_rel(root)).exists()
    assert cli("revert", "--repo", root)[0] == 0
    assert tree_snapshot(root) == pristine


def test_a_deleted_file_the_next_run_changes_is_a_conflict_that_force_rewrites(tmp_path):
    """The recipe's module changed since it was applied and the user had deleted the module file: apply
    refuses (nothing to merge into); --force writes the new module."""
    from yolopatch import api
    from yolopatch.errors import RefusedError

    recipes = shutil.copytree(FIXTURE_RECIPES, tmp_path / "recipes")
    root = make_target(tmp_path / "repo", "v5-list")
    api.apply(root, ["toy"], recipe_dirs=(recipes,))
    module = root / "models" / "toy.py"
    module.unlink()
    (recipes / "toy" / "toy.py").write_bytes((recipes / "toy" / "toy.py").read_bytes() + b"# version 2\n")
    before = tree_snapshot(root)
    with pytest.raises(RefusedError, match="models/toy.py: was deleted since yolopatch wrote it; nothing was written"):
        api.apply(root, ["toyblock"], recipe_dirs=(recipes,))
    assert tree_snapshot(root) == before
    api.apply(root, ["toyblock"], force=True, recipe_dirs=(recipes,))
    assert module.read_bytes() == (recipes / "toy" / "toy.py").read_bytes()


def test_an_edited_module_file_is_kept_by_a_partial_revert(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    assert cli("apply", "toy", "toyblock", "--repo", root)[0] == 0
    module = root / "ultralytics/nn/modules/toyblock.py"
    mine = module.read_bytes() + b"# fixed the kernel size\n"
    module.write_bytes(mine)
    code, _, err = cli("revert", "toyblock", "--repo", root)
    assert code == 0, err
    assert "kept ultralytics/nn/modules/toyblock.py" in err and module.read_bytes() == mine
    assert b"toyblock" not in (root / "ultralytics/nn/tasks.py").read_bytes()
    code, _, err = cli("apply", "toyblock", "--repo", root)  # now the user's file: not overwritten silently
    assert code == 3 and "toyblock.py already exists with other content" in err


def _as_older_state_folder(root):
    """What yolopatch 0.1 left: state.json format 1 and no written/ copies."""
    shutil.rmtree(root / STATE / "written")
    record = json.loads((root / STATE / "state.json").read_text())
    (root / STATE / "state.json").write_text(json.dumps({**record, "format": 1}, indent=2) + "\n")


def test_an_older_state_folder_without_written_copies(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-set")
    pristine = tree_snapshot(root)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    _as_older_state_folder(root)
    assert cli("apply", "toyblock", "--repo", root)[0] == 0  # unedited files are their own base
    assert cli("revert", "toyblock", "--repo", root)[0] == 0
    _as_older_state_folder(root)
    parser = root / parser_rel(root)
    users = parser.read_bytes() + FUNCTION
    parser.write_bytes(users)
    code, _, err = cli("revert", "--repo", root)
    assert code == 3 and "does not keep yolopatch's version to merge with" in err
    code, _, err = cli("revert", "--repo", root, "--force")
    assert code == 0, err
    assert (root / "ultralytics/nn/tasks.py.orig").read_bytes() == users
    assert without(tree_snapshot(root), "ultralytics/nn/tasks.py.orig") == pristine


def test_an_interrupted_run_never_loses_the_users_bytes(cli, tmp_path, killable):
    """apply toyblock over the user's edits is killed at every write in turn; `revert` then rolls the run
    back and reverts toy: the function and the user's YAML are still there."""
    template = make_target(tmp_path / "template", "ul-frozenset")
    pristine_parser = (template / parser_rel(template)).read_bytes()
    assert cli("apply", "toy", "--repo", template)[0] == 0
    parser = template / parser_rel(template)
    parser.write_bytes(parser.read_bytes() + FUNCTION)
    tuned = set_classes(template / yaml_rel(template))
    for k in range(1, 80):
        root = shutil.copytree(template, tmp_path / f"run-{k}", symlinks=True)
        code = killable(f"kill-write:{k}", "apply", "toyblock", "--repo", root)
        if code == 0:
            assert k > 5
            break
        assert code == 137
        code, _, err = cli("revert", "--repo", root)
        assert code == 0, err
        assert (root / parser_rel(root)).read_bytes() == pristine_parser + FUNCTION, f"kill at write {k}"
        assert (root / yaml_rel(root)).read_bytes() == tuned, f"kill at write {k}"
        assert not (root / STATE).exists()
        shutil.rmtree(root)
    else:
        pytest.fail("apply never completed")


def test_an_edit_made_after_a_kill_is_kept_beside_by_the_recovery(cli, tmp_path, killable):
    """The run was killed after writing tasks.py, then the user edited tasks.py before running `revert`:
    replaying the journal puts the before-image back, but keeps the user's bytes as tasks.py.orig first."""
    root = make_target(tmp_path / "repo", "ul-frozenset")
    pristine = tree_snapshot(root)
    tasks = root / parser_rel(root)
    for k in range(1, 80):
        assert killable(f"kill-write:{k}", "apply", "toy", "--repo", root) == 137
        if tasks.read_bytes() != pristine[parser_rel(root)][1]:
            break
        assert cli("revert", "--repo", root)[0] == 0
    assert (root / STATE / "journal.json").exists()
    mine = tasks.read_bytes() + FUNCTION
    tasks.write_bytes(mine)
    code, _, err = cli("revert", "--repo", root)
    assert code == 0, err
    assert "kept beside: ultralytics/nn/tasks.py.orig" in err
    assert (root / "ultralytics/nn/tasks.py.orig").read_bytes() == mine
    assert without(tree_snapshot(root), "ultralytics/nn/tasks.py.orig") == pristine
