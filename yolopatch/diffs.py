"""Unified diffs that `git apply` accepts, byte-exact (CRLF and missing final newlines included)."""

from __future__ import annotations

import difflib

from .engine import Change


def _lines(data: bytes | None) -> list[str]:
    if not data:
        return []
    return data.decode("utf-8", errors="surrogateescape").splitlines(keepends=True)


def _body(before: list[str], after: list[str]) -> list[str]:
    out = []
    for line in difflib.unified_diff(before, after, lineterm="", n=3):
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            out.append(line + "\n")
            continue
        if line.endswith("\n"):
            out.append(line)
        else:  # last line of a file without a final newline
            out.append(line + "\n\\ No newline at end of file\n")
    return out


def unified_diff(changes: list[Change]) -> str:
    chunks = []
    for change in changes:
        a, b = f"a/{change.rel}", f"b/{change.rel}"
        header = [f"diff --git {a} {b}\n"]
        if change.before is None:
            header += [f"new file mode 100{change.mode or 0o644:o}\n", "--- /dev/null\n", f"+++ {b}\n"]
        elif change.after is None:
            header += ["deleted file mode 100644\n", f"--- {a}\n", "+++ /dev/null\n"]
        else:
            header += [f"--- {a}\n", f"+++ {b}\n"]
        body = _body(_lines(change.before), _lines(change.after))
        if body:
            chunks.append("".join(header + body))
    return "".join(chunks)


def summary(changes: list[Change]) -> list[str]:
    lines = []
    for change in changes:
        added = removed = 0
        for line in difflib.unified_diff(_lines(change.before), _lines(change.after), n=0):
            added += line.startswith("+") and not line.startswith("+++")
            removed += line.startswith("-") and not line.startswith("---")
        note = f"  {change.note}" if change.note else ""
        lines.append(f"{change.action:>6}  {change.rel}  (+{added} -{removed}){note}")
    return lines
