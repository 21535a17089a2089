"""Property-based: random formatting variants of every anchor shape (comments, blank lines, quotes,
CRLF, one element per line) either apply and round-trip byte-identically, or are refused cleanly;
the tool never writes Python that does not parse."""

import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalikes import FIXTURE_RECIPES, STYLES, make_target, parser_source, tree_snapshot
from yolopatch import api
from yolopatch.errors import RefusedError


@st.composite
def variants(draw):
    style = draw(st.sampled_from(STYLES))
    lines = parser_source(style).split("\n")
    out = []
    for line in lines:
        if line.strip() and draw(st.integers(0, 5)) == 0:
            line = line + "  # " + draw(st.sampled_from(["note", "yolo", "x = 1", "'quoted'"]))
        out.append(line)
        if draw(st.integers(0, 7)) == 0:
            out.append("")
    source = "\n".join(out)
    if draw(st.booleans()):
        source = source.replace("'", '"') if "'" in source else source.replace('"', "'")
    crlf = draw(st.booleans())
    return style, source, crlf


def parser_path(root: Path) -> Path:
    return next(p for p in (root / "models" / "yolo.py", root / "ultralytics" / "nn" / "tasks.py") if p.exists())


def test_any_formatting_applies_and_round_trips_or_is_refused():
    outcomes = Counter()

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(variants())
    def check(variant):
        outcomes[_apply_and_round_trip(variant)] += 1

    check()
    ran = outcomes["applied"] + outcomes["refused"]
    # comments and blank lines anywhere are formatting, not new anchors: most variants must apply
    assert ran and outcomes["applied"] >= 0.6 * ran, outcomes


def _apply_and_round_trip(variant) -> str:
    style, source, crlf = variant
    with tempfile.TemporaryDirectory() as tmp:
        root = make_target(Path(tmp) / "repo", style)
        data = source.replace("\n", "\r\n") if crlf else source
        parser_path(root).write_bytes(data.encode())
        try:
            compile(data, "variant", "exec")
        except SyntaxError:
            return "not python"  # the variant itself is not Python; nothing to check
        before = tree_snapshot(root)
        try:
            api.apply(root, ["toy"], recipe_dirs=(FIXTURE_RECIPES,))
        except RefusedError:
            assert tree_snapshot(root) == before
            return "refused"
        patched = parser_path(root).read_bytes()
        compile(patched, "patched", "exec")
        assert (b"\r\n" in patched) == crlf
        assert api.apply(root, ["toy"], recipe_dirs=(FIXTURE_RECIPES,)).changes == []
        api.revert(root)
        assert tree_snapshot(root) == before
        return "applied"
