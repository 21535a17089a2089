"""Before/after examples for every edit, strict both ways: the edit must produce exactly `after`
(an unexpected change fails, a missing change fails) and must leave `after` unchanged (fixed point)."""

import textwrap

import libcst as cst
import pytest

from yolopatch.edits.anchors import AnchorMissing
from yolopatch.edits.imports import add_from_import
from yolopatch.edits.loops import teach_forward_loops
from yolopatch.edits.parse_model import Registration, register


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def run_import(source: str) -> str:
    return add_from_import(cst.parse_module(source), "pkg.modules.mod", ["A", "B"]).code


def run_loops(source: str) -> str:
    return teach_forward_loops(cst.parse_module(source), "f.py")[0].code


def run_register(registration: Registration):
    return lambda source: register(cst.parse_module(source), registration, "f.py").code


PARSE_MODEL = dedent('''
    def parse_model(d, ch):
        layers, save, c2 = [], [], ch[-1]
        for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):  # rows
            if m in {Conv, C3}:
                c1, c2 = ch[f], args[0]
                args = [c1, c2, *args[1:]]
                if m in {C3}:
                    args.insert(2, n)
                    n = 1
            elif m is Concat:
                c2 = sum(ch[x] for x in f)
            else:
                c2 = ch[f]
            m_ = m(*args)
            if i == 0:
                ch = []
            ch.append(c2)
        return layers, save
''')

EXAMPLES = {
    "import after the leading imports": (run_import, dedent('''
        """doc"""
        import torch
        from x import (y,
                       z)

        try:
            import thop
        except ImportError:
            thop = None


        def f():
            pass
    '''), dedent('''
        """doc"""
        import torch
        from x import (y,
                       z)
        from pkg.modules.mod import A, B

        try:
            import thop
        except ImportError:
            thop = None


        def f():
            pass
    ''')),
    "loop: spread before every save step": (run_loops, dedent('''
        class M:
            def _predict_once(self, x):
                y = []
                for m in self.model:
                    x = m(x)  # run
                    y.append(x if m.i in self.save else None)  # save output
                return x

            def predict(self, x, batch=None):
                y = []
                for m in self.model[:-1]:
                    if isinstance(m, int):
                        x = m(x, 1)
                    else:
                        x = m(x)

                    y.append(x if m.i in self.save else None)
                return x
    '''), dedent('''
        class M:
            def _predict_once(self, x):
                y = []
                for m in self.model:
                    x = m(x)  # run
                    x = spread_backbone_outputs(m, x, y, self.save)  # yolopatch: a backbone fills several rows
                    y.append(x if m.i in self.save else None)  # save output
                return x

            def predict(self, x, batch=None):
                y = []
                for m in self.model[:-1]:
                    if isinstance(m, int):
                        x = m(x, 1)
                    else:
                        x = m(x)
                    x = spread_backbone_outputs(m, x, y, self.save)  # yolopatch: a backbone fills several rows

                    y.append(x if m.i in self.save else None)
                return x
    ''')),
    "blocks join the scaled and repeat sets": (run_register(Registration(blocks=("GSConv", "VoV"), repeat_blocks=("VoV",))),
                                               PARSE_MODEL, PARSE_MODEL
                                               .replace("if m in {Conv, C3}:", "if m in {Conv, C3, GSConv, VoV}:")
                                               .replace("if m in {C3}:", "if m in {C3, VoV}:")),
    "backbone branch and row numbering": (run_register(Registration(backbones=("Net",))), PARSE_MODEL, dedent('''
        def parse_model(d, ch):
            layers, save, c2 = [], [], ch[-1]
            backbone_extra_rows = 0  # rows filled by multi-output backbones beyond their own
            for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):  # rows
                i += backbone_extra_rows  # later rows are numbered after every backbone output row
                if m in {Conv, C3}:
                    c1, c2 = ch[f], args[0]
                    args = [c1, c2, *args[1:]]
                    if m in {C3}:
                        args.insert(2, n)
                        n = 1
                elif m is Concat:
                    c2 = sum(ch[x] for x in f)
                elif m in {Net}:  # yolopatch: multi-output backbones fill one row per output stride
                    args = [ch[f], *args]
                    n = 1
                    c2 = None  # replaced by one entry per row in claim_backbone_rows()
                else:
                    c2 = ch[f]
                m_ = m(*args)
                if i == 0:
                    ch = []
                ch.append(c2)
                backbone_extra_rows += claim_backbone_rows(m_, ch)
            return layers, save
    ''')),
    "fusion branch": (run_register(Registration(fusions=("BiFPN",))), PARSE_MODEL, PARSE_MODEL.replace(
        "        else:\n            c2 = ch[f]\n",
        "        elif m in {BiFPN}:  # yolopatch: weighted fusion of several same-width inputs\n"
        "            args = [[ch[x] for x in f], *args]\n"
        "            c2 = ch[f[0]]\n"
        "        else:\n            c2 = ch[f]\n")),
    "one-per-line frozenset local keeps its layout": (
        run_register(Registration(blocks=("GSConv",))),
        PARSE_MODEL.replace("    layers, save, c2 = [], [], ch[-1]\n",
                            "    layers, save, c2 = [], [], ch[-1]\n    base = frozenset(\n        {\n"
                            "            Conv,\n            C3,\n        }\n    )\n")
        .replace("if m in {Conv, C3}:", "if m in base:"),
        PARSE_MODEL.replace("    layers, save, c2 = [], [], ch[-1]\n",
                            "    layers, save, c2 = [], [], ch[-1]\n    base = frozenset(\n        {\n"
                            "            Conv,\n            C3,\n            GSConv,\n        }\n    )\n")
        .replace("if m in {Conv, C3}:", "if m in base:")),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_edit_produces_exactly_the_expected_source(name):
    edit, before, after = EXAMPLES[name]
    assert edit(before) == after


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_edit_is_a_fixed_point(name):
    edit, _, after = EXAMPLES[name]
    assert edit(after) == after


def test_missing_anchor_names_it():
    source = PARSE_MODEL.replace("        else:\n            c2 = ch[f]\n", "")
    with pytest.raises(AnchorMissing, match=r"else: c2 = ch\[f\]"):
        run_register(Registration(backbones=("Net",)))(source)
    with pytest.raises(AnchorMissing, match="parse_model"):
        run_register(Registration(blocks=("X",)))("def other():\n    pass\n")
    with pytest.raises(AnchorMissing, match=r"y.append"):
        run_loops("def f():\n    for m in x:\n        y.append(m)\n")
