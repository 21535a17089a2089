"""Recipe groups: members of a group ship the group's files (one copy in the group's folder) and their
content hash covers them; a broken group is refused naming the recipe."""

from pathlib import Path

import pytest

from yolopatch.errors import RefusedError, UsageError
from yolopatch.recipes import load_all, load_recipe, resolve

GROUP_TOML = 'name = "shared"\nsummary = "two members"\nexclusive = true\n\n[[files]]\nsource = "common.py"\n'


def member_toml(name: str, group: str = "shared", own_file: str | None = None) -> str:
    files = f'[[files]]\nsource = "{own_file}"\n\n' if own_file else ""
    return (f'name = "{name}"\nversion = "1.0.0"\ntargets = ["ultralytics"]\ngroup = "{group}"\n\n{files}'
            f'[[modules]]\nname = "{name.capitalize()}Block"\nfile = "common.py"\nrole = "block"\n')


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "group.toml").write_text(GROUP_TOML)
    (tmp_path / "shared" / "common.py").write_text("class AlphaBlock: ...\nclass BetaBlock: ...\n")
    for name in ("alpha", "beta"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.toml").write_text(member_toml(name))
    return tmp_path


def test_members_ship_the_group_file_from_its_one_folder(recipes):
    alpha, beta = (load_recipe(recipes / name) for name in ("alpha", "beta"))
    assert alpha.group.name == beta.group.name == "shared" and alpha.group.exclusive
    assert alpha.files == () and alpha.shipped_files() == {"common.py": recipes / "shared" / "common.py"}
    assert beta.shipped_files() == alpha.shipped_files()


def test_a_group_folder_is_not_a_recipe(recipes):
    assert sorted(load_all((recipes,))) == sorted(["alpha", "beta", *load_all()])
    with pytest.raises(UsageError, match="unknown recipe 'shared'"):
        resolve(["shared"], (recipes,))


def test_hash_covers_the_group_files(recipes):
    before = load_recipe(recipes / "alpha").content_hash()
    (recipes / "shared" / "common.py").write_text("class AlphaBlock: pass\nclass BetaBlock: ...\n")
    after_file = load_recipe(recipes / "alpha").content_hash()
    (recipes / "shared" / "group.toml").write_text(GROUP_TOML.replace("two members", "2 members"))
    after_toml = load_recipe(recipes / "alpha").content_hash()
    assert len({before, after_file, after_toml}) == 3


def test_own_files_and_group_files_together(recipes):
    (recipes / "alpha" / "extra.py").write_text("x = 1\n")
    (recipes / "alpha" / "recipe.toml").write_text(member_toml("alpha", own_file="extra.py"))
    assert sorted(load_recipe(recipes / "alpha").shipped_files()) == ["common.py", "extra.py"]


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "shared" / "group.toml").unlink(), "group 'shared' has no shared/group.toml"),
    (lambda r: (r / "shared" / "group.toml").write_text(GROUP_TOML.replace('"shared"', '"other"', 1)),
     "group name 'other' must equal the folder name"),
    (lambda r: (r / "shared" / "group.toml").write_text("name = [\n"), "group.toml does not parse"),
    (lambda r: (r / "shared" / "common.py").unlink(), "file 'common.py' is missing"),
    (lambda r: (r / "alpha" / "recipe.toml").write_text(member_toml("alpha", group="../shared")),
     "group '../shared' must be lower-case"),
    (lambda r: ((r / "alpha" / "common.py").write_text(""),
                (r / "alpha" / "recipe.toml").write_text(member_toml("alpha", own_file="common.py"))),
     "file 'common.py' is shipped by group shared too"),
])
def test_broken_groups_are_refused(recipes, breakage, message):
    breakage(recipes)
    with pytest.raises(RefusedError, match="recipe (alpha|shared): " + message.replace("(", r"\(").replace(".", r"\.")):
        load_recipe(recipes / "alpha")


def test_the_shipped_iou_group_loads():
    from yolopatch.recipes import _load_group
    from yolopatch.resources import recipes_dir

    group = _load_group(recipes_dir() / "siou", "iou-loss")
    assert group.exclusive and group.files == ("yolopatch_iou.py",)
