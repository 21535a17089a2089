"""Derivation of model YAMLs from stock configs, on look-alike configs: the static strides and widths, every
transform's exact rows (worked out by hand from the rules in yolopatch/derive/), the refusals and their
reasons, the [derive] schema, and the rendered YAML reading back as the derived rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from derive_lookalikes import CLASSIFY, DERIVE_RECIPES, P6, PAN, PAN_POSE, V5, WORLD
from yolopatch.derive import facts as facts_module
from yolopatch.derive.compose import combinations, derive
from yolopatch.derive.facts import DeriveFacts, SchemaError
from yolopatch.derive.graph import Graph, NotDerivable, Ref, width_value
from yolopatch.derive.render import flow, render
from yolopatch.derive.yamlsubset import ConfigError, load
from yolopatch.recipes import Module, load_recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NEXT_RECIPES = Path(__file__).resolve().parent / "fixtures" / "derive_recipes_next"
BONE = load_recipe(DERIVE_RECIPES / "toybone").derive
NECK = load_recipe(DERIVE_RECIPES / "toyneck").derive
FUSE = load_recipe(DERIVE_RECIPES / "toyfuse").derive
UP2 = "[None, 2, 'nearest']"


def next_facts(name: str) -> DeriveFacts:
    """The [derive] facts of an issue-16 look-alike recipe (its roles are read straight from its recipe.toml)."""
    raw = tomllib.loads((NEXT_RECIPES / name / "recipe.toml").read_text())
    modules = [Module(name=m["name"], file=m["file"], role=m["role"]) for m in raw.get("modules", [])]
    return facts_module.parse(raw.get("derive"), modules)


def graph_of(text: str, family: str = "ultralytics") -> Graph:
    return Graph.from_config(load(text), family)


def derived(text: str, *chosen, family: str = "ultralytics") -> dict:
    """The derived YAML, written and read back."""
    graph = derive(graph_of(text, family), [(f"r{i}", f) for i, f in enumerate(chosen)])
    return yaml.safe_load(render(graph, "x", "base.yaml", "f", "t", ["r"]).decode())


def rows(text: str) -> list:
    return yaml.safe_load(text)


# -- reading configs -------------------------------------------------------------------------------------
ODD_TEXTS = [
    "a: [1, -2, 3.5, 0.50, True, false, None, null, ~, 'True', \"x # y\", nearest]  # c\n",
    "k:\n  - [1, [2, [3, []]], 'a']\n  - [-1, 1, nn.Upsample, [None, 2, 'nearest']]\n",
    "b:\n  [[-1, 1, Conv, [64, 6, 2, 2]],  # 0\n   [-1, 3, C3, [128]],\n  ]\n",
    "scales: # c\n  n: [0.33, 0.25, 1024]\n  on: [1, 2]\n",
    "activation: nn.LeakyReLU(0.1)\ntext_model: mobileclip2:b\nx: yes\n",
    "m: {a: 1}\n", "x: &a [1]\ny: *a\n", "e: [1e3, 0x10, 1_000, 2001-01-01]\n", "t: 'a\tb'\n",
    "q: ['it''s', \"a\\tb\"]\n", "---\nz: 1\n",
]


@pytest.mark.parametrize("text", [PAN, PAN_POSE, CLASSIFY, P6, V5, WORLD, *ODD_TEXTS])
def test_the_config_reader_gives_what_pyyaml_gives(text):
    assert load(text) == yaml.safe_load(text)


def test_a_config_that_is_not_yaml_is_one_error():
    with pytest.raises(ConfigError):
        load("a: [1, 2\nb: ]]\n")


# -- static strides and widths ---------------------------------------------------------------------------
def test_strides_and_widths_come_from_the_modules():
    graph = graph_of(PAN)
    strides = [graph.stride[Ref(r.id)] for r in graph.rows]
    assert strides == [2, 4, 4, 8, 8, 16, 16, 32, 32, 32, 16, 16, 16, 8, 8, 8, 16, 16, 16, 32, 32, 32, None]
    # scale a: width 0.25, max 512 -> SPPF min(512, 512) * 0.25 = 128; Concat 11 = 128 + C2f(256) * 0.25 = 192
    widths = [width_value(graph.width[Ref(r.id)], "ultralytics", 0.25, 512) for r in graph.rows[:-1]]
    assert widths[9] == 128 and widths[10] == 128 and widths[11] == 192 and widths[12] == 64
    # scale b: width 0.5, max 256 -> min(512, 256) * 0.5 = 128; C2f(128) * 0.5 = 64; Conv(32) * 0.5 = 16
    assert width_value(graph.width[Ref("s9")], "ultralytics", 0.5, 256) == 128
    assert width_value(graph.width[Ref("s4")], "ultralytics", 0.5, 256) == 64
    assert width_value(graph.width[Ref("s0")], "ultralytics", 0.5, 256) == 16
    # YOLOv5 has no max_channels: ceil(1024 * 0.5 / 8) * 8 = 512; 100 * 0.33 = 33 -> 40
    assert width_value(("scaled", 1024), "yolov5", 0.5) == 512
    assert width_value(("scaled", 100), "yolov5", 0.33) == 40


def test_strides_of_layers_with_arguments():
    text = """\
nc: 1
backbone:
  - [-1, 1, Conv, [16, 3, 1]]
  - [-1, 1, nn.MaxPool2d, [2, 2, 0]]
  - [-1, 1, nn.MaxPool2d, [3]]
  - [-1, 1, nn.ZeroPad2d, [[0, 1, 0, 1]]]
  - [-1, 1, nn.MaxPool2d, [2, 1, 0]]
  - [-1, 1, ResNetLayer, [16, 8, 1, True, 1]]
  - [-1, 1, ResNetLayer, [8, 8, 2, False, 2]]
  - [-1, 1, nn.ConvTranspose2d, [32, 2, 2, 0]]
  - [-1, 1, HGStem, [8, 16]]
  - [-1, 1, ADown, [32]]
head:
  - [-1, 1, Classify, [nc]]
"""
    graph = graph_of(text)
    assert [graph.stride[Ref(r.id)] for r in graph.rows] == [1, 2, 6, 6, 6, 24, 48, 24, 96, 192, None]
    assert graph.width[Ref("s6")] == ("fixed", 32)  # ResNetLayer: c2 * 4 unless first
    assert graph.width[Ref("s5")] == ("fixed", 8)


def test_an_unknown_module_makes_only_what_reads_it_unknown():
    text = PAN.replace("  - [-1, 2, C2f, [128, True]] # 4", "  - [-1, 2, FancyBlock, [128]] # 4")
    graph = graph_of(text)
    assert graph.stride[Ref("s4")] is None and graph.stride[Ref("s6")] is None
    assert "FancyBlock (stock row 4) is a module yolopatch has no facts for" in graph.why[Ref("s6")]
    with pytest.raises(NotDerivable, match=r"whose stride yolopatch cannot work out: FancyBlock \(stock row 4\) is a "
                                           r"module yolopatch has no facts for"):
        derive(graph, [("b", BONE)])


# -- backbone --------------------------------------------------------------------------------------------
PAN_WITH_TOYBONE = rows(f"""\
- [-1, 1, ToyBone, [16]]
- [-1, 1, SPPF, [512, 5]]
- [-1, 1, nn.Upsample, {UP2}]
- [[-1, 3], 1, Concat, [1]]
- [-1, 2, C2f, [256]]
- [-1, 1, nn.Upsample, {UP2}]
- [[-1, 2], 1, Concat, [1]]
- [-1, 2, C2f, [128]]
- [-1, 1, Conv, [128, 3, 2]]
- [[-1, 8], 1, Concat, [1]]
- [-1, 2, C2f, [256]]
- [-1, 1, Conv, [256, 3, 2]]
- [[-1, 5], 1, Concat, [1]]
- [-1, 2, C2f, [512]]
- [[11, 14, 17], 1, Detect, [nc]]
""")


def test_a_backbone_replaces_the_stock_rows_and_the_head_is_remapped_by_stride():
    out = derived(PAN, BONE)
    assert out["backbone"] + out["head"] == PAN_WITH_TOYBONE
    assert {k: v for k, v in out.items() if k not in ("backbone", "head")} == {
        "nc": 7, "scales": {"a": [0.5, 0.25, 512], "b": [1.0, 0.5, 256]}}


def test_a_backbone_keeps_every_top_level_key_and_the_heads_own_arguments():
    out = derived(PAN_POSE, BONE)
    assert out["kpt_shape"] == [5, 3] and out["end2end"] is True and out["nc"] == 7
    assert out["backbone"] == rows("- [-1, 1, ToyBone, [16]]\n- [-1, 1, SPPF, [512, 5, 3, True]]\n"
                                   "- [-1, 1, C2PSA, [512]]\n")  # the SPPF already gives C2PSA its width
    assert out["head"][-1] == [[12, 15, 18], 1, "Pose26", ["nc", "kpt_shape"]]
    assert out["head"][1] == [[-1, 3], 1, "Concat", [1]]


def test_a_classifier_reads_the_deepest_output_and_a_residual_block_gets_its_width():
    out = derived(CLASSIFY, BONE)
    assert out["backbone"] + out["head"] == rows("""\
- [-1, 1, ToyBone, [16]]
- [-1, 1, Conv, [512, 1, 1]]
- [-1, 1, C2PSA, [512]]
- [-1, 1, Classify, [nc]]
""")


def test_p6_rows_stay_and_are_fed_by_the_new_p5():
    out = derived(P6, BONE)
    assert out["backbone"] + out["head"] == rows(f"""\
- [-1, 1, ToyBone, [16]]
- [-1, 1, Conv, [512, 3, 2]]
- [-1, 2, C3, [512]]
- [-1, 1, SPPF, [512, 5]]
- [-1, 1, Conv, [384, 1, 1]]
- [-1, 1, nn.Upsample, {UP2}]
- [[-1, 4], 1, Concat, [1]]
- [-1, 2, C3, [384, False]]
- [-1, 1, Conv, [384, 3, 2]]
- [[-1, 8], 1, Concat, [1]]
- [-1, 2, C3, [512, False]]
- [[11, 14], 1, Detect, [nc]]
""")
    assert out["depth_multiple"] == 0.5 and out["width_multiple"] == 0.5


def test_a_head_reading_a_stride_the_backbone_lacks_is_refused_with_the_reason():
    text = PAN.replace("[[-1, 4], 1, Concat, [1]] # 14", "[[-1, 4, 0], 1, Concat, [1]] # 14")
    with pytest.raises(NotDerivable, match=r"stock row 14 \(Concat\) reads stock row 0 \(Conv\) at P1/2; "
                                           r"the backbone has outputs at strides 4, 8, 16, 32 only"):
        derive(graph_of(text), [("b", BONE)])


def test_two_backbone_rows_at_one_stride_are_refused():
    text = PAN.replace("[[-1, 4], 1, Concat, [1]] # 14", "[[-1, 3], 1, Concat, [1]] # 14") \
        .replace("[[15, 18, 21], 1, Detect", "[[15, 18, 4], 1, Detect")
    with pytest.raises(NotDerivable, match=r"two backbone rows at P3/8 \(stock row 3 \(Conv\) and stock row 4"):
        derive(graph_of(text), [("b", BONE)])


def test_open_vocabulary_bases_are_refused_for_every_recipe():
    for facts in (BONE, NECK, FUSE):
        with pytest.raises(NotDerivable, match="C2fAttn layer: an open-vocabulary model"):
            derive(graph_of(WORLD), [("r", facts)])


# -- neck blocks -----------------------------------------------------------------------------------------
def test_neck_blocks_are_swapped_with_the_declared_arguments():
    out = derived(PAN, NECK)
    assert out["backbone"] == yaml.safe_load(PAN)["backbone"]  # only the neck changes
    head = out["head"]
    assert head[2] == [-1, 2, "ToyCSP", [256]] and head[5] == [-1, 2, "ToyCSP", [128]]
    assert head[6] == [-1, 1, "ToyConv", [128, 3, 2]] and head[9] == [-1, 1, "ToyConv", [256, 3, 2]]
    assert head[12] == [[15, 18, 21], 1, "Detect", ["nc"]]
    pose = derived(PAN_POSE, NECK)["head"]
    assert pose[2] == [-1, 1, "ToyCSP", [256, 0.5]]  # C3k2: width kept, its second argument dropped, 0.5 added


def test_repeats_follow_the_blocks_own_convention():
    from yolopatch.derive.facts import Substitution

    flat = DeriveFacts(kind="neck", substitutions=(
        Substitution(sources=("C2f",), module="Flat", keep=(0,), repeats=False),
        Substitution(sources=("Conv",), module="FlatConv", keep=(0, 1, 2), repeats=False)))
    text = PAN.replace("[-1, 1, Conv, [128, 3, 2]] # 16", "[-1, 3, Conv, [128, 3, 2]] # 16")
    head = derived(text, flat)["head"]
    assert head[2] == [-1, 1, "Flat", [256]]  # C2f took its repeats inside: one block
    assert head[6] == [-1, 3, "FlatConv", [128, 3, 2]]  # the stock row built 3 Convs in a row: kept


def test_a_model_without_a_neck_is_refused_for_neck_recipes():
    for facts in (NECK, FUSE, next_facts("toyup")):
        with pytest.raises(NotDerivable, match="the model has no neck: its Classify row reads the backbone"):
            derive(graph_of(CLASSIFY), [("r", facts)])


# -- fusion ----------------------------------------------------------------------------------------------
def test_concats_become_fusion_with_equalising_convs_and_same_level_skips():
    out = derived(PAN, FUSE)
    assert out["head"] == rows(f"""\
- [-1, 1, Conv, [256, 1, 1]]
- [-1, 1, nn.Upsample, {UP2}]
- [[-1, 6], 1, ToyFuse, []]
- [-1, 2, C2f, [256]]
- [-1, 1, Conv, [128, 1, 1]]
- [-1, 1, nn.Upsample, {UP2}]
- [[-1, 4], 1, ToyFuse, []]
- [-1, 2, C2f, [128]]
- [-1, 1, Conv, [128, 3, 2]]
- [-1, 1, Conv, [256, 1, 1]]
- [[-1, 13, 6], 1, ToyFuse, []]
- [-1, 2, C2f, [256]]
- [-1, 1, Conv, [256, 3, 2]]
- [-1, 1, Conv, [512, 1, 1]]
- [[-1, 9], 1, ToyFuse, []]
- [-1, 2, C2f, [512]]
- [[17, 21, 25], 1, Detect, [nc]]
""")


def test_fusion_after_a_new_backbone_projects_its_fixed_widths():
    head = derived(PAN, BONE, FUSE)["head"]
    # the backbone's P4 and P3 maps have fixed widths (64, 32): each gets a 1x1 Conv; the P4 one (row 8) is
    # shared by the top-down node and the bottom-up node's same-level skip
    assert [r[0] for r in head if r[2] == "Conv" and r[3][1:] == [1, 1]] == [-1, 3, -1, 2, -1, -1]
    assert [r[0] for r in head if r[2] == "ToyFuse"] == [[7, 8], [12, 13], [-1, 10, 8], [-1, 5]]


def test_a_concat_feeding_several_rows_is_refused():
    text = PAN.replace("[[15, 18, 21], 1, Detect", "[[11, 18, 21], 1, Detect")
    with pytest.raises(NotDerivable, match=r"stock row 11 \(Concat\) feeds several rows"):
        derive(graph_of(text), [("f", FUSE)])


# -- attention, upsampler, P2 (issue 16's recipes, as look-alikes) -----------------------------------------
def test_attention_goes_after_each_head_input_and_the_neck_continues_from_it():
    head = derived(PAN, next_facts("toyattn"))["head"]
    assert head[5:] == rows("""\
- [-1, 2, C2f, [128]]
- [-1, 1, ToyAttention, [4]]
- [-1, 1, Conv, [128, 3, 2]]
- [[-1, 12], 1, Concat, [1]]
- [-1, 2, C2f, [256]]
- [-1, 1, ToyAttention, [4]]
- [-1, 1, Conv, [256, 3, 2]]
- [[-1, 9], 1, Concat, [1]]
- [-1, 2, C2f, [512]]
- [-1, 1, ToyAttention, [4]]
- [[16, 20, 24], 1, Detect, [nc]]
""")


def test_attention_before_a_classifier():
    out = derived(CLASSIFY, next_facts("toyattn"))
    assert out["backbone"][-1] == [-1, 1, "ToyAttention", [4]] and out["head"] == [[-1, 1, "Classify", ["nc"]]]


def test_an_upsampler_replaces_the_necks_nn_upsample():
    head = derived(PAN, next_facts("toyup"))["head"]
    assert head[0] == head[3] == [-1, 1, "ToyUp", [2, "lp"]]
    other_scale = DeriveFacts(kind="upsample", module="ToyUp", scale=4)
    with pytest.raises(NotDerivable, match="no nn.Upsample with scale factor 4"):
        derive(graph_of(PAN), [("u", other_scale)])


def test_p2_adds_a_stride_4_level_to_a_pan_head():
    out = derived(PAN, next_facts("toyp2"))
    assert out["head"][5:] == rows(f"""\
- [-1, 2, C2f, [128]]
- [-1, 1, nn.Upsample, {UP2}]
- [[-1, 2], 1, Concat, [1]]
- [-1, 2, C2f, [64]]
- [-1, 1, Conv, [64, 3, 2]]
- [[-1, 15], 1, Concat, [1]]
- [-1, 2, C2f, [128]]
- [-1, 1, Conv, [128, 3, 2]]
- [[-1, 12], 1, Concat, [1]]
- [-1, 2, C2f, [256]]
- [-1, 1, Conv, [256, 3, 2]]
- [[-1, 9], 1, Concat, [1]]
- [-1, 2, C2f, [512]]
- [[18, 21, 24, 27], 1, Detect, [nc]]
""")


def test_p2_on_a_yolov5_head_mirrors_its_lateral_convs_and_anchors_become_a_count():
    text = render(derive(graph_of(V5, "yolov5"), [("p2", next_facts("toyp2"))]), "x", "b", "f", "t", ["p2"]).decode()
    out = yaml.safe_load(text)
    assert out["anchors"] == 3 and "AutoAnchor" in text
    assert out["head"][7:] == rows(f"""\
- [-1, 3, C3, [256, False]]
- [-1, 1, Conv, [128, 1, 1]]
- [-1, 1, nn.Upsample, {UP2}]
- [[-1, 2], 1, Concat, [1]]
- [-1, 3, C3, [128, False]]
- [-1, 1, Conv, [128, 3, 2]]
- [[-1, 18], 1, Concat, [1]]
- [-1, 3, C3, [256, False]]
- [-1, 1, Conv, [256, 3, 2]]
- [[-1, 14], 1, Concat, [1]]
- [-1, 3, C3, [512, False]]
- [-1, 1, Conv, [512, 3, 2]]
- [[-1, 10], 1, Concat, [1]]
- [-1, 3, C3, [1024, False]]
- [[21, 24, 27, 30], 1, Detect, [nc, anchors]]
""")


def test_p2_after_a_backbone_reads_its_stride_4_output():
    head = derived(PAN, BONE, next_facts("toyp2"))["head"]
    assert head[7] == [[-1, 1], 1, "Concat", [1]]  # ToyBone fills rows 0-4; its stride-4 output is row 1


def test_p2_refusals():
    with pytest.raises(NotDerivable, match="Classify is not a PAN detection head"):
        derive(graph_of(CLASSIFY), [("p", next_facts("toyp2"))])
    twice = derive(graph_of(PAN), [("p", next_facts("toyp2"))])
    with pytest.raises(NotDerivable, match="already reads P2/4"):
        derive(twice, [("p", next_facts("toyp2"))])


# -- combining recipes and writing the file --------------------------------------------------------------
def test_combinations_take_at_most_one_recipe_of_each_kind_in_transform_order():
    other_bone = DeriveFacts(kind="backbone", module="B2", strides=(8, 16, 32), channels=(1, 2, 3))
    chosen = [("zfuse", FUSE), ("neck", NECK), ("bone", BONE), ("bone2", other_bone),
              ("nothing", facts_module.NOT_DECLARED)]
    names = [[n for n, _ in combo] for combo in combinations(chosen)]
    assert names == [["bone"], ["bone2"], ["neck"], ["zfuse"], ["bone", "neck", "zfuse"], ["bone2", "neck", "zfuse"]]
    assert [[n for n, _ in c] for c in combinations([("neck", NECK)])] == [["neck"]]


def test_the_written_yaml_says_where_each_row_comes_from():
    graph = derive(graph_of(PAN), [("bone", BONE), ("fuse", FUSE)])
    text = render(graph, "toy8-toybone-toyfuse", "cfg/toy8.yaml", "toy", "detect", ["toybone", "toyfuse"]).decode()
    lines = text.splitlines()
    assert lines[0] == "# toy8-toybone-toyfuse.yaml: cfg/toy8.yaml (toy detect) with toybone + toyfuse, derived by yolopatch."
    assert "  - [-1, 1, ToyBone, [16]] # 0-4 P2/4, P3/8, P4/16, P5/32: replaces stock rows 0-8" in lines
    assert "  - [-1, 1, SPPF, [512, 5]] # 5 P5/32, stock row 9" in lines
    assert "  - [[7, 8], 1, ToyFuse, []] # 9 P4/16, stock row 11, was Concat" in lines
    assert any("new: 1x1 Conv to the fused width 256" in line for line in lines)
    assert lines[-1].endswith("Detect(P3/8, P4/16, P5/32), stock row 22")


@pytest.mark.parametrize("value", [None, True, False, 0, -3, 0.5, 1e-05, 2.5e20, float("inf"), "None", "True", "yes",
                                   "1.5", "nc", "a b", "x: y", "#", [1, ["a", None]], [], {"k": [1]}])
def test_values_are_written_so_they_read_back_the_same(value):
    assert yaml.safe_load(f"v: {flow(value, frozenset({'nc'}))}\n")["v"] == value


def test_names_parse_model_resolves_are_written_bare():
    assert flow(["nc", "None", "nearest", "anchors"], frozenset({"nc", "None"})) == '[nc, None, "nearest", "anchors"]'


# -- the [derive] schema ---------------------------------------------------------------------------------
MODULES = [Module(name="Bone", file="f.py", role="backbone", channels=(8, 16), strides=(16, 32)),
           Module(name="Blk", file="f.py", role="block", repeats=True),
           Module(name="Fuse", file="f.py", role="fusion")]


@pytest.mark.parametrize("raw, message", [
    ({"backbone": {"module": "Bone"}, "fusion": {"module": "Fuse"}}, "exactly one of"),
    ({"backbones": {}}, "unknown key(s) backbones"),
    ({"backbone": {"module": "Nope"}}, "'Nope', which is not one of the recipe's [[modules]]"),
    ({"backbone": {"module": "Blk"}}, "needs a module of role backbone; Blk is block"),
    ({"backbone": {"module": "Bone", "args": 3}}, "backbone.args must be a list"),
    ({"backbone": {"module": "Bone", "scale": 2}}, "unknown key(s) scale"),
    ({"substitute": [{"from": ["C2f"], "to": "Blk", "keep": [1]}]}, "keep must list argument indices starting with 0"),
    ({"substitute": [{"from": [], "to": "Blk"}]}, "from must be a list of module names"),
    ({"substitute": {"from": ["C2f"], "to": "Blk"}}, "must be one or more tables"),
    ({"substitute": [{"from": ["C2f"], "to": "Fuse"}]}, "needs a module of role block"),
    ({"upsample": {"module": "Fuse", "scale": 2}}, "needs a module of role upsample"),
    ({"p2": 1}, "p2 must be true"),
    ({"reason": " "}, "reason must be a non-empty string"),
])
def test_bad_derive_tables_are_refused_with_the_reason(raw, message):
    with pytest.raises(SchemaError) as caught:
        facts_module.parse(raw, MODULES)
    assert message in str(caught.value)


def test_good_derive_tables_give_their_facts():
    assert facts_module.parse(None, MODULES).kind == "none"
    bone = facts_module.parse({"backbone": {"module": "Bone", "args": [1]}}, MODULES)
    assert (bone.kind, bone.module, bone.args, bone.strides, bone.channels) == ("backbone", "Bone", (1,), (16, 32), (8, 16))
    neck = facts_module.parse({"substitute": [{"from": ["C2f"], "to": "Blk", "keep": [0, 2], "extra": [5]}]}, MODULES)
    assert neck.substitutions[0].keep == (0, 2) and neck.substitutions[0].extra == (5,) and neck.substitutions[0].repeats
    assert facts_module.parse({"reason": "why not"}, MODULES).reason == "why not"
    assert next_facts("toyp2").kind == "p2" and next_facts("toyup").scale == 2


def test_p2_refuses_a_block_that_cannot_take_half_its_width():
    text = PAN.replace("  - [-1, 2, C2f, [128]] # 15", "  - [-1, 2, A2C2f, [128, False, -1]] # 15")
    with pytest.raises(NotDerivable, match=r"stock row 15 \(A2C2f\) cannot be copied at half width for the new "
                                           r"level: its area attention needs a multiple of 32 channels"):
        derive(graph_of(text), [("p", next_facts("toyp2"))])


# -- strided blocks everywhere after the stem (RFAConv, DCNv2) -------------------------------------------
STRIDED = facts_module.parse({"substitute": [
    {"from": ["Conv"], "to": "Blk", "keep": [0, 1, 2], "within": "model", "stride": 2},
    {"from": ["ADown"], "to": "Blk", "keep": [0], "extra": [3, 2], "within": "model", "stride": 2}]}, MODULES)


def test_a_model_wide_substitution_swaps_every_strided_conv_after_the_stem():
    out = derived(V5, STRIDED, family="yolov5")
    stock = yaml.safe_load(V5)
    backbone, head = out["backbone"], out["head"]
    assert backbone[0] == stock["backbone"][0]  # the stem reads the image: kept
    for i in (1, 3, 5, 7):  # the stride-2 convs of the backbone, each [c2, 3, 2]
        assert backbone[i] == [-1, 1, "Blk", stock["backbone"][i][3][:3]]
    assert [r for i, r in enumerate(backbone) if i not in (1, 3, 5, 7)] == \
        [r for i, r in enumerate(stock["backbone"]) if i not in (1, 3, 5, 7)]
    assert head[0] == [-1, 1, "Conv", [512, 1, 1]] and head[4] == [-1, 1, "Conv", [256, 1, 1]]  # stride 1: kept
    assert head[8] == [-1, 1, "Blk", [256, 3, 2]] and head[11] == [-1, 1, "Blk", [512, 3, 2]]
    assert out["anchors"] == stock["anchors"] and head[-1] == stock["head"][-1]


def test_a_model_wide_substitution_needs_no_neck_and_takes_extra_arguments():
    text = CLASSIFY.replace("  - [-1, 1, Conv, [256, 3, 2]]", "  - [-1, 1, ADown, [256]]")
    backbone = derived(text, STRIDED)["backbone"]
    assert backbone[0] == [-1, 1, "Conv", [32, 3, 2]]
    assert backbone[1:5] == [[-1, 1, "Blk", [64, 3, 2]], [-1, 1, "Blk", [128, 3, 2]], [-1, 1, "Blk", [256, 3, 2]],
                             [-1, 1, "Blk", [512, 3, 2]]]
    neck_only = facts_module.parse({"substitute": [{"from": ["Conv"], "to": "Blk", "keep": [0, 1, 2], "stride": 2}]},
                                   MODULES)
    with pytest.raises(NotDerivable, match="the model has no neck"):
        derive(graph_of(CLASSIFY), [("r", neck_only)])


def test_a_strided_substitution_says_when_no_row_has_that_stride():
    only_ones = CLASSIFY.replace("3, 2]]", "3, 1]]").replace("[32, 3, 1]]", "[32, 3, 2]]")
    with pytest.raises(NotDerivable, match=r"the model has none of the modules the recipe replaces \(Conv, ADown\) "
                                           r"with a stride of their own"):
        derive(graph_of(only_ones), [("r", STRIDED)])


@pytest.mark.parametrize("raw, message", [
    ({"substitute": [{"from": ["Conv"], "to": "Blk", "within": "everywhere"}]}, "within must be one of neck, model"),
    ({"substitute": [{"from": ["Conv"], "to": "Blk", "stride": 3}]}, "stride must be a power of two"),
    ({"substitute": [{"from": ["Conv"], "to": "Blk", "stride": True}]}, "stride must be a power of two"),
])
def test_bad_substitution_scopes_are_refused(raw, message):
    with pytest.raises(SchemaError, match=message):
        facts_module.parse(raw, MODULES)
