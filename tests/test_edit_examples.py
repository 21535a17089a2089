"""Tests generated from the examples every edit carries (edits/*.py), strict both ways, as Fixit generates
them from a rule's VALID / INVALID cases:

- before: classified pending, and the transform gives exactly `after` (an unexpected change fails, a
  missing change fails);
- after: classified applied, and a second pass leaves it byte for byte (a fixed point);
- conflict: classified conflict with the expected reason, and applying refuses without a change.
"""

import libcst as cst
import pytest

from yolopatch import roles
from yolopatch.add.rewrite import RewriteTargetImports
from yolopatch.edits.base import APPLIED, CONFLICT, PENDING, ConflictExample, Example
from yolopatch.edits.registry import REGISTRY
from yolopatch.errors import RefusedError

EDITS = (*REGISTRY, RewriteTargetImports)  # the parser file's edits, and the one `add` makes to a module file
CASES = [(kind, case) for kind in EDITS for case in kind.examples()]
CHANGES = [pytest.param(case, id=f"{kind.id}: {case.title}") for kind, case in CASES if isinstance(case, Example)]
CONFLICTS = [pytest.param(case, id=f"{kind.id}: {case.title}") for kind, case in CASES
             if isinstance(case, ConflictExample)]


@pytest.mark.parametrize("case", CHANGES)
def test_before_is_pending_and_becomes_exactly_after(case):
    before = cst.parse_module(case.before)
    assert case.edit.classify(before).state == PENDING
    assert case.edit.apply(before, "f.py").code == case.after


@pytest.mark.parametrize("case", CHANGES)
def test_after_is_applied_and_a_second_pass_is_a_no_op(case):
    after = cst.parse_module(case.after)
    assert case.edit.classify(after).state == APPLIED
    assert case.edit.apply(after, "f.py").code == case.after


@pytest.mark.parametrize("case", CONFLICTS)
def test_conflict_is_refused_with_its_reason(case):
    verdict = case.edit.classify(cst.parse_module(case.source))
    assert verdict.state == CONFLICT and case.reason in verdict.reason
    with pytest.raises(RefusedError) as refused:
        case.edit.apply(cst.parse_module(case.source), "f.py")
    assert case.reason in str(refused.value) and "nothing was written" in str(refused.value)


def test_every_edit_has_a_change_and_a_conflict_example():
    for kind in EDITS:
        examples = kind.examples()
        assert any(isinstance(e, Example) for e in examples), kind.id
        assert any(isinstance(e, ConflictExample) for e in examples), kind.id


def test_every_role_with_a_branch_has_an_example():
    """Adding a role is one entry in roles.py and one example: this holds the second half."""
    from yolopatch.edits.branches import RoleBranch

    covered = {case.edit.template for case in RoleBranch.examples() if isinstance(case, Example)}
    titles = {case.title.split(":")[0] for case in RoleBranch.examples()}
    for role in roles.ROLES:
        if role.registration == "branch":
            assert role.branch in covered and role.name in titles, role.name
