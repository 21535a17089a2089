import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from lookalikes import FIXTURE_RECIPES  # noqa: E402


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from yolopatch.cli import main

    def run(*args):
        try:
            main(["--recipes-dir", str(FIXTURE_RECIPES), *map(str, args)])
        except SystemExit as exc:
            captured = capsys.readouterr()
            return exc.code, captured.out, captured.err
        raise AssertionError("main() returned without exiting")

    return run
