"""recipes/README.md: its example recipe is one the loader accepts and `apply` writes, and its roles table
is the one roles.py generates."""

import re
from pathlib import Path

import yaml

from lookalikes import make_target
from yolopatch import roles
from yolopatch.recipes import load_recipe
from yolopatch.render import render_yaml

DOC = Path(__file__).resolve().parents[1] / "recipes" / "README.md"


def example_files() -> dict[str, str]:
    """The code blocks whose first line names a file of the example recipe (`# se/...`)."""
    files = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), flags=re.S):
        first, _, body = block.partition("\n")
        if re.fullmatch(r"# se/[\w./-]+", first):
            files[first[2:]] = body
    return files


def test_the_example_recipe_loads_renders_and_applies(tmp_path, cli):
    files = example_files()
    assert set(files) == {"se/recipe.toml", "se/se.py", "se/templates/yolov8-se.yaml.j2"}
    for rel, text in files.items():
        (tmp_path / "my-recipes" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "my-recipes" / rel).write_text(text)
    recipe = load_recipe(tmp_path / "my-recipes" / "se")
    assert [(m.name, m.role) for m in recipe.modules] == [("SE", "same-width")]
    model = yaml.safe_load(render_yaml(recipe, recipe.yamls[0], "scales"))
    rows = model["backbone"] + model["head"]
    assert len(rows) == 26 and rows[-1] == [[16, 20, 24], 1, "Detect", ["nc"]]
    assert [i for i, row in enumerate(rows) if row[2] == "SE"] == [16, 20, 24]
    compile(files["se/se.py"], "se.py", "exec")

    root = make_target(tmp_path / "repo", "ul-frozenset")
    code, _, err = cli("--recipes-dir", tmp_path / "my-recipes", "apply", "se", "--repo", root)
    assert code == 0, err
    assert "elif m in {SE}:" in (root / "ultralytics" / "nn" / "tasks.py").read_text()
    assert (root / "ultralytics" / "cfg" / "models" / "yolopatch" / "yolov8-se.yaml").is_file()


def test_the_roles_table_is_generated_from_the_roles():
    assert f"{roles.BEGIN}\n{roles.markdown_table()}\n{roles.END}" in DOC.read_text()
