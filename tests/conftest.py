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


@pytest.fixture
def killable():
    """Run the CLI in a forked child with YOLOPATCH_FAULT set, so that `kill-write:N` can end the process
    as a real kill would (no rollback, no cleanup) without paying an interpreter start-up per run.
    Returns the child's exit code (137 when killed)."""
    import os

    from yolopatch.cli import main

    def run(fault, *args):
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 99
            try:
                os.environ["YOLOPATCH_FAULT"] = fault
                sys.stdout = sys.stderr = open(os.devnull, "w")
                main(["--recipes-dir", str(FIXTURE_RECIPES), *map(str, args)])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    return run
