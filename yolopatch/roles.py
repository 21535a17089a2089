"""The roles a module can play in a model YAML: one entry per role, read by recipe validation, the plan,
the parse_model branches and `yolopatch add`. Adding a role is one entry here plus its edit example
(edits/branches.py).

How parse_model treats a role (`registration`):
  scaled   joins the target's own width-scaled module set (`c1, c2 = ch[f], args[0]`), and its repeat set
           when the module takes a repeat count: it scales and repeats exactly like C3 / C2f
  branch   an `elif m in {...}:` before the final `else: c2 = ch[f]`, with the body `branch` below;
           roles with the same body share one branch
  none     imported only: parse_model's final `else` keeps the width and passes the YAML args as written
"""

from __future__ import annotations

from dataclasses import dataclass

BACKBONE_BRANCH = """\
if m in {{{names}}}:  # yolopatch: multi-output backbones fill one row per output stride
    args = [ch[f], *args]
    n = 1
    c2 = None  # replaced by one entry per row in claim_backbone_rows()
"""
SAME_WIDTH_BRANCH = """\
if m in {{{names}}}:  # yolopatch: modules that keep the input width
    c2 = ch[f]
    args = [c2, *args]
"""
FUSION_BRANCH = """\
if m in {{{names}}}:  # yolopatch: weighted fusion of several same-width inputs
    args = [[ch[x] for x in f], *args]
    c2 = ch[f[0]]
"""


@dataclass(frozen=True)
class Role:
    name: str
    summary: str            # one line for listings and docs
    signature: str          # the constructor parse_model calls, as a recipe author writes it
    registration: str       # "scaled" | "branch" | "none" (see the module docstring)
    branch: str = ""        # the branch template when registration == "branch"
    repeats: bool = False   # may take a repeat count after c2 (`repeats = true` in recipe.toml)
    declares_outputs: bool = False  # recipe.toml declares `channels` and `strides` of its outputs
    multi_output: bool = False      # fills several YAML rows: needs the row counter and the forward-loop step
    derivation: str = ""    # what deriving YAMLs from a stock config does with a module of this role


ROLES: tuple[Role, ...] = (
    Role("backbone", "multi-output backbone at YAML row 0, one row per output stride",
         "__init__(self, c1=3, *args); feature_channels, feature_strides; forward(x) -> list of maps",
         "branch", BACKBONE_BRANCH, declares_outputs=True, multi_output=True,
         derivation="replaces the stock backbone rows; the head is remapped by stride"),
    Role("block", "a layer with its own output width, width-scaled like Conv / C2f",
         "__init__(self, c1, c2, *args) or, with repeats, __init__(self, c1, c2, n=1, *args)",
         "scaled", repeats=True,
         derivation="substitutes the stock blocks the recipe names"),
    Role("same-width", "keeps the input width: attention such as SE, CBAM, CoordAtt, EMA",
         "__init__(self, c1, *args); the output has c1 channels; never width-scaled",
         "branch", SAME_WIDTH_BRANCH,
         derivation="inserted after each input of the head"),
    Role("upsample", "keeps the width and raises the resolution: DySample",
         "__init__(self, c1, *args); the output has c1 channels at a larger size",
         "branch", SAME_WIDTH_BRANCH,
         derivation="replaces the neck's nn.Upsample rows"),
    Role("fusion", "fuses several same-width inputs and keeps the width: BiFPN",
         "__init__(self, c1, *args) with c1 the list of input widths; forward(xs)",
         "branch", FUSION_BRANCH,
         derivation="replaces the head's Concat rows"),
    Role("pass-through", "imported only: the YAML passes every argument, the width is kept",
         "__init__(self, *yaml_args); the output has the input's width",
         "none"),
)

BY_NAME: dict[str, Role] = {role.name: role for role in ROLES}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def get(name: str) -> Role:
    return BY_NAME[name]


def branches() -> list[tuple[str, tuple[str, ...]]]:
    """(branch template, role names sharing it), in table order: the order the branches are inserted."""
    found: dict[str, list[str]] = {}
    for role in ROLES:
        if role.registration == "branch":
            found.setdefault(role.branch, []).append(role.name)
    return [(template, tuple(names)) for template, names in found.items()]
