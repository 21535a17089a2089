"""Three-way merge of a file the user edited after yolopatch wrote it (Breezy's merge3, line by line).

base:   the bytes yolopatch wrote last time (kept in .yolopatch/written/)
theirs: the bytes on disk now (yolopatch's version plus the user's edits)
ours:   the bytes this run wants (yolopatch's new version, or the pristine file for a revert)

Non-overlapping changes merge; changes that touch the same or adjacent lines are a conflict, reported as
line ranges of the user's file. A merged Python file must still compile, otherwise it is a conflict too.
"""

from __future__ import annotations

from dataclasses import dataclass

import merge3

YOURS, YOLOPATCH = b"yours", b"yolopatch"  # conflict marker labels


@dataclass(frozen=True)
class Merged:
    content: bytes                       # the merge (when clean) or the text with conflict markers
    conflicts: tuple[tuple[int, int], ...]  # 1-based inclusive line ranges in the user's file
    invalid_python: str = ""             # why a clean merge of a .py file does not compile

    @property
    def clean(self) -> bool:
        return not self.conflicts and not self.invalid_python

    def lines(self) -> str:
        """'lines 12-14, 30' for a message."""
        parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in self.conflicts]
        return ("line " if len(parts) == 1 and "-" not in parts[0] else "lines ") + ", ".join(parts)


def merge(base: bytes, theirs: bytes, ours: bytes, rel: str) -> Merged:
    m = merge3.Merge3(base.splitlines(True), theirs.splitlines(True), ours.splitlines(True))
    conflicts = []
    for region in m.merge_regions():
        if region[0] == "conflict":
            _, _, _, start, end, _, _ = region
            # the user's lines in conflict; a pure deletion on their side is reported at its position
            conflicts.append((start + 1, max(start + 1, end)))
    if conflicts:
        marked = b"".join(m.merge_lines(name_a=YOURS, name_b=YOLOPATCH))
        return Merged(marked, tuple(conflicts))
    content = b"".join(m.merge_lines())
    if rel.endswith(".py"):
        try:
            compile(content, rel, "exec", dont_inherit=True)
        except SyntaxError as exc:
            return Merged(content, (), f"line {exc.lineno}: {exc.msg}")
    return Merged(content, ())
