"""Small look-alike sources the edits' examples start from (written for the examples, not upstream code)."""

from __future__ import annotations

import textwrap


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# parse_model in the shape every release has (GUIDE §3), with a literal width-scaled set and repeat set.
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
            layers.append(m_)
            if i == 0:
                ch = []
            ch.append(c2)
        return layers, save
''')

# The same with ultralytics' (8.3.65+) frozenset locals, one element per line.
PARSE_MODEL_FROZENSETS = PARSE_MODEL.replace(
    "    layers, save, c2 = [], [], ch[-1]\n",
    "    layers, save, c2 = [], [], ch[-1]\n"
    "    base_modules = frozenset(\n        {\n            Conv,\n            C3,\n        }\n    )\n"
    "    repeat_modules = frozenset(  # modules with 'repeat' arguments\n        {\n            C3,\n        }\n    )\n",
).replace("if m in {Conv, C3}:", "if m in base_modules:").replace("if m in {C3}:", "if m in repeat_modules:")
