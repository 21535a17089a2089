"""README.md holds exactly the bases tables `python tests/bases_table.py` generates from the releases."""

from pathlib import Path

import pytest

from bases_table import readme_section

pytestmark = pytest.mark.real


def test_readme_holds_the_generated_bases_tables():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert readme_section() in readme
