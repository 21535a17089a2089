"""What every source edit is: an anchor it looks for, a classify step, a transform, and its own examples.

An edit classifies a tree as
  pending   its anchor is there and the change is not: `transform` makes it
  applied   the change is already there: nothing to do (a second pass is a no-op)
  conflict  the anchor is missing, or the tree holds something the change would contradict; the reason
            says which, and nothing is written
Each edit class carries examples beside it (before / after, and conflicts with the reason expected);
tests/test_edit_examples.py generates its tests from them, strict both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import libcst as cst

from ..errors import RefusedError
from .anchors import AnchorMissing

PENDING, APPLIED, CONFLICT = "pending", "applied", "conflict"


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str = ""        # why a conflict (or what is pending), in words
    missing: bool = False   # a conflict because the anchor is not there at all


def pending(reason: str = "") -> Verdict:
    return Verdict(PENDING, reason)


def applied() -> Verdict:
    return Verdict(APPLIED)


def conflict(reason: str) -> Verdict:
    return Verdict(CONFLICT, reason)


def missing(anchor: str) -> Verdict:
    return Verdict(CONFLICT, anchor, missing=True)


class EditConflict(RefusedError):
    """The file holds something an edit would contradict."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}; nothing was written")


@dataclass(frozen=True)
class Example:
    """`edit` turns `before` into exactly `after` (and leaves `after` as it is)."""
    title: str
    edit: "Edit"
    before: str
    after: str


@dataclass(frozen=True)
class ConflictExample:
    """`edit` refuses `source`, with a reason containing `reason`."""
    title: str
    edit: "Edit"
    source: str
    reason: str


class Edit:
    """One kind of edit of the parser file. Subclasses set `id` and `scope` and define classify, transform,
    `for_patch` (the instances a patch needs) and `examples()`."""

    id: ClassVar[str]
    scope: ClassVar[str]   # the piece of the parser file it edits: "header" | "parse_model" | "loops"

    def classify(self, module: cst.Module) -> Verdict:
        raise NotImplementedError

    def transform(self, module: cst.Module) -> cst.Module:
        """Make the change; called only on a tree classified pending."""
        raise NotImplementedError

    def apply(self, module: cst.Module, file: str) -> cst.Module:
        verdict = self.classify(module)
        if verdict.state == CONFLICT:
            raise AnchorMissing(file, verdict.reason) if verdict.missing else EditConflict(file, verdict.reason)
        if verdict.state == APPLIED:
            return module
        return self.transform(module)

    @classmethod
    def for_patch(cls, patch, import_prefix: str) -> list["Edit"]:
        raise NotImplementedError

    @classmethod
    def examples(cls) -> list:
        raise NotImplementedError
