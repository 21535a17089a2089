"""Error types; each carries the process exit code the CLI reports for it."""


class YolopatchError(Exception):
    """Base class: a problem reported to the user as one line."""

    exit_code = 123


class UsageError(YolopatchError):
    """Bad command-line input that click itself cannot catch (unknown recipe, bad option mix)."""

    exit_code = 2


class RefusedError(YolopatchError):
    """The tool refused to act; nothing was written."""

    exit_code = 3


class VerifyError(YolopatchError):
    """Verification ran and found a failure."""

    exit_code = 4


class EnvironmentFailure(YolopatchError):
    """Verification failed, and the stock model fails the same step the same way: the environment is the
    cause, not the patch."""

    exit_code = 5


class InternalError(YolopatchError):
    """A bug or an environment failure part-way; the tree was restored to its state before the run."""

    exit_code = 123


class IncompleteRollbackError(YolopatchError):
    """Writing failed part-way and restoring the files failed too; the journal stays so that
    `yolopatch revert` can finish the job."""

    exit_code = 125


EXIT_OK = 0
EXIT_CHECK_WOULD_CHANGE = 1
