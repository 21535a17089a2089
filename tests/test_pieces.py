"""Editing the parser file piece by piece gives exactly the bytes of editing the whole file, on every
look-alike anchor style and on real releases, while libcst parses only a fraction of the file."""

import pytest
from hypothesis import HealthCheck, given, settings

from lookalikes import STYLES, parser_source
from test_properties import variants
from upstream import MIDDLE_ULTRALYTICS, NEWEST_ULTRALYTICS, YOLOV5_PACKAGE, pristine, upstream_yolov5
from yolopatch.edits.anchors import AnchorMissing
from yolopatch.edits.parser_file import ParserPatch, apply_patch, apply_patch_whole
from yolopatch.edits.pieces import locate
from yolopatch.errors import RefusedError

PREFIX = "pkg.modules"
PATCHES = {
    "block": ParserPatch((("pkg.modules.blocks", ("GSConv", "VoVGSCSP")),),
                         (("block", ("GSConv", "VoVGSCSP")),), repeats=("VoVGSCSP",)),
    "backbone": ParserPatch((("pkg.modules.mnv4", ("MobileNetV4ConvSmall",)),),
                            (("backbone", ("MobileNetV4ConvSmall",)),)),
    "everything": ParserPatch((("pkg.modules.a", ("Blk",)), ("pkg.modules.b", ("Bb", "Bb2")), ("pkg.modules.c", ("Fuse",)),
                               ("pkg.modules.d", ("SE", "Up", "Free"))),
                              (("backbone", ("Bb", "Bb2")), ("block", ("Blk",)), ("same-width", ("SE",)),
                               ("upsample", ("Up",)), ("fusion", ("Fuse",)), ("pass-through", ("Free",))),
                              repeats=("Blk",)),
}


def parsed_share(source: bytes) -> float:
    pieces = locate(source)
    parts = [pieces.header, pieces.parse_model, *pieces.loops]
    return sum(p.end - p.start for p in parts) / len(source)


def both(source: bytes, patch: ParserPatch) -> tuple[bytes, bytes]:
    return apply_patch(source, patch, "parser.py", PREFIX), apply_patch_whole(source, patch, "parser.py", PREFIX)


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("patch", sorted(PATCHES))
def test_lookalikes_edited_piecewise_equal_whole_file(style, crlf, patch):
    source = parser_source(style).replace("\n", "\r\n" if crlf else "\n").encode()
    assert locate(source) is not None  # the piecewise path is the one taken
    piecewise, whole = both(source, PATCHES[patch])
    assert piecewise == whole != source
    assert apply_patch(piecewise, PATCHES[patch], "parser.py", PREFIX) == piecewise  # second pass: no-op


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variants())
def test_formatting_variants_edited_piecewise_equal_whole_file(variant):
    style, text, crlf = variant
    source = (text.replace("\n", "\r\n") if crlf else text).encode()
    try:
        compile(source, "variant", "exec")
    except SyntaxError:
        return
    for patch in PATCHES.values():
        try:
            whole = apply_patch_whole(source, patch, "parser.py", PREFIX)
        except RefusedError as exc:
            with pytest.raises(RefusedError) as piecewise_error:
                apply_patch(source, patch, "parser.py", PREFIX)
            assert str(piecewise_error.value) == str(exc)
            continue
        assert apply_patch(source, patch, "parser.py", PREFIX) == whole


def _real_parser_files():
    return {
        f"ultralytics {NEWEST_ULTRALYTICS}": pristine("ultralytics", NEWEST_ULTRALYTICS) / "ultralytics/nn/tasks.py",
        f"ultralytics {MIDDLE_ULTRALYTICS}": pristine("ultralytics", MIDDLE_ULTRALYTICS) / "ultralytics/nn/tasks.py",
        f"yolov5 {YOLOV5_PACKAGE} (PyPI)": pristine("yolov5", YOLOV5_PACKAGE) / "yolov5/models/yolo.py",
        f"yolov5 {YOLOV5_PACKAGE} (upstream)": upstream_yolov5() / "models/yolo.py",
    }


@pytest.mark.parametrize("release", [f"ultralytics {NEWEST_ULTRALYTICS}", f"ultralytics {MIDDLE_ULTRALYTICS}",
                                     f"yolov5 {YOLOV5_PACKAGE} (PyPI)", f"yolov5 {YOLOV5_PACKAGE} (upstream)"])
def test_real_releases_edited_piecewise_equal_whole_file(release):
    source = _real_parser_files()[release].read_bytes()
    pieces = locate(source)
    assert pieces is not None and pieces.parse_model is not None and pieces.loops
    for patch in PATCHES.values():
        piecewise, whole = both(source, patch)
        assert piecewise == whole != source
    if release.startswith("ultralytics"):  # the point: tasks.py is 100 KB, the edits touch a small part
        assert parsed_share(source) < 0.35


@pytest.mark.parametrize("prefix", [b"\xef\xbb\xbf", b"# -*- coding: latin-1 -*-\n"], ids=["bom", "latin-1"])
def test_file_read_in_another_encoding_is_edited_whole(prefix):
    source = prefix + parser_source("ul-set").encode()
    assert locate(source) is None
    piecewise, whole = both(source, PATCHES["everything"])
    assert piecewise == whole != source


def test_file_without_leading_imports_is_edited_whole():
    source = parser_source("ul-set").encode()
    body_first = b"class Early:\n    pass\n\n\n" + source
    assert locate(body_first) is None
    patch = PATCHES["everything"]
    patched = apply_patch(body_first, patch, "parser.py", PREFIX)
    assert patched == apply_patch_whole(body_first, patch, "parser.py", PREFIX)
    assert patched.index(b"from pkg.modules.a import Blk") < patched.index(b"class Early")


@pytest.mark.parametrize("remove, anchor", [
    (b"def parse_model(", "def parse_model()"),
    (b"y.append(x if m.i in self.save else None)", "a forward loop"),
])
def test_missing_anchor_refused_with_the_whole_file_message(remove, anchor):
    source = parser_source("ul-frozenset").encode()
    replacement = b"def parse_model_renamed(" if remove.startswith(b"def") else b"y.append(x)"
    broken = source.replace(remove, replacement)
    with pytest.raises(AnchorMissing) as piecewise:
        apply_patch(broken, PATCHES["backbone"], "parser.py", PREFIX)
    with pytest.raises(AnchorMissing) as whole:
        apply_patch_whole(broken, PATCHES["backbone"], "parser.py", PREFIX)
    assert str(piecewise.value) == str(whole.value)
    assert anchor in str(piecewise.value)


def test_a_loop_in_a_top_level_function_is_edited():
    source = parser_source("v5-list").encode() + (
        b"\n\ndef run(self, x):\n    y = []\n    for m in self.model:\n        x = m(x)\n"
        b"        y.append(x if m.i in self.save else None)\n    return x\n")
    pieces = locate(source)
    assert len(pieces.loops) == 2 and not pieces.loops[1].nested
    piecewise, whole = both(source, PATCHES["backbone"])
    assert piecewise == whole
    assert piecewise.count(b"x = route_backbone_levels(m, x, y, self.save)") == 2


def test_second_parse_model_is_left_alone_as_in_the_whole_file_edit():
    source = parser_source("ul-tuple").encode()
    start = source.index(b"def parse_model(")
    twice = source + b"\n\n" + source[start:]
    piecewise, whole = both(twice, PATCHES["everything"])
    assert piecewise == whole
    first, second = piecewise.split(b"def parse_model(")[1:]
    assert b"Blk" in first and b"Blk" not in second
