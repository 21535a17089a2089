"""MobileNetV4 backbones (Qin et al., "MobileNetV4: Universal Models for the Mobile Ecosystem", arXiv:2404.10518).

Five multi-output backbones: the conv-only Small / Medium / Large models and the Hybrid Medium / Large
models that add Mobile MQA attention blocks in the last two stages.  Every backbone returns five feature
maps at strides 2, 4, 8, 16 and 32 (the stem output and the end of each resolution level).  The 1x1 -> 1280
classification head of the paper is not part of the backbone.

Building blocks:
  * ``ConvBNAct``   conv + BatchNorm + optional activation
  * ``FusedIB``     fused inverted bottleneck: full kxk expansion conv, then 1x1 projection
  * ``UIB``         universal inverted bottleneck; its optional depthwise convs before the expansion
                    ("start") and between expansion and projection ("middle") give the four variants:
                    ExtraDW (start + middle), IB (middle only), ConvNext-like (start only), FFN (neither)
  * ``MobileMQA``   pre-norm multi-query attention whose single shared key/value head may be computed on a
                    spatially downsampled map (stride-2 depthwise conv), with a residual connection
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = (
    "MobileNetV4ConvSmall",
    "MobileNetV4ConvMedium",
    "MobileNetV4ConvLarge",
    "MobileNetV4HybridMedium",
    "MobileNetV4HybridLarge",
)


def make_divisible(value, divisor=8):
    """Round ``value`` to the nearest multiple of ``divisor`` without losing more than 10 % of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _make_act(act):
    """Build a fresh activation module from its name (each layer owns its own instance).

    ReLU works in place, as in timm: it only ever follows a BatchNorm, whose backward needs its input rather
    than the output ReLU overwrites, and an out-of-place ReLU allocates a full-size tensor per layer (about
    10% slower at 640x640 on CPU, see tests/benchmarks/bench_modules.py).  GELU has no in-place form.
    """
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "gelu":
        return nn.GELU()
    raise ValueError(f"unsupported activation {act!r}")


class ConvBNAct(nn.Module):
    """Conv2d (no bias, 'same' padding for odd kernels) -> BatchNorm2d -> activation (or none).

    ``forward_fuse`` is the forward once ``bn`` has been folded into ``conv`` (the YOLO Conv protocol the
    targets' fuse() follows).
    """

    def __init__(self, c1, c2, k=1, s=1, groups=1, act="relu"):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = _make_act(act) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))


class LayerScale(nn.Module):
    """Learnable per-channel scale of a residual branch, initialised to a small value."""

    def __init__(self, channels, init_value=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init_value)))

    def forward(self, x):
        # Out-of-place on purpose: the input may be needed by autograd.
        return x * self.gamma.view(1, -1, 1, 1)


def _layer_scale(channels, init_value):
    return LayerScale(channels, init_value) if init_value is not None else nn.Identity()


class FusedIB(nn.Module):
    """Fused inverted bottleneck: kxk conv expands (and strides), 1x1 linear conv projects."""

    def __init__(self, c1, c2, k=3, s=1, expand=4.0, act="relu"):
        super().__init__()
        hidden = make_divisible(c1 * expand)
        self.expand = ConvBNAct(c1, hidden, k, s, act=act)
        self.project = ConvBNAct(hidden, c2, 1, act=None)
        self.residual = s == 1 and c1 == c2

    def forward(self, x):
        y = self.project(self.expand(x))
        return x + y if self.residual else y


class UIB(nn.Module):
    """Universal inverted bottleneck.

    ``start_k`` / ``mid_k`` are the kernel sizes of the optional depthwise convs before the 1x1 expansion
    and after it (0 disables one).  The stride is taken by the middle depthwise conv when present, else by
    the start one, matching the reference models.
    """

    def __init__(self, c1, c2, start_k=3, mid_k=3, s=1, expand=4.0, act="relu", layer_scale=None):
        super().__init__()
        if s > 1 and not (start_k or mid_k):
            raise ValueError("a strided UIB needs at least one depthwise conv")
        hidden = make_divisible(c1 * expand)
        start_s = 1 if mid_k else s
        # The start depthwise conv is linear (no activation), the middle one is not.
        self.dw_start = ConvBNAct(c1, c1, start_k, start_s, groups=c1, act=None) if start_k else nn.Identity()
        self.pw_expand = ConvBNAct(c1, hidden, 1, act=act)
        self.dw_mid = ConvBNAct(hidden, hidden, mid_k, s, groups=hidden, act=act) if mid_k else nn.Identity()
        self.pw_project = ConvBNAct(hidden, c2, 1, act=None)
        self.scale = _layer_scale(c2, layer_scale)
        self.residual = s == 1 and c1 == c2

    def forward(self, x):
        y = self.pw_project(self.dw_mid(self.pw_expand(self.dw_start(x))))
        y = self.scale(y)
        return x + y if self.residual else y


class MultiQueryAttention2d(nn.Module):
    """Multi-query attention on a feature map: ``heads`` query heads share one key and one value head.

    With ``kv_stride > 1`` keys and values are computed on a map downsampled by a depthwise conv + BN,
    which shrinks the attention matrix by ``kv_stride**2`` (the paper's spatial-reduction trick).
    """

    def __init__(self, c1, c2, heads=4, key_dim=64, kv_stride=1, dw_k=3):
        super().__init__()
        self.heads = heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.query = nn.Conv2d(c1, heads * key_dim, 1, bias=False)
        self.key = self._kv_branch(c1, key_dim, kv_stride, dw_k)
        self.value = self._kv_branch(c1, key_dim, kv_stride, dw_k)
        self.out = nn.Conv2d(heads * key_dim, c2, 1, bias=False)

    @staticmethod
    def _kv_branch(c1, dim, stride, k):
        layers = []
        if stride > 1:
            layers += [nn.Conv2d(c1, c1, k, stride, (k - 1) // 2, groups=c1, bias=False), nn.BatchNorm2d(c1)]
        layers.append(nn.Conv2d(c1, dim, 1, bias=False))
        return nn.Sequential(*layers)

    def forward(self, x):
        b, _, h, w = x.shape
        # q: (B, heads, N, d); k, v: (B, 1, M, d) -- the single k/v head broadcasts over the query heads.
        q = self.query(x).reshape(b, self.heads, self.key_dim, h * w).transpose(-1, -2)
        k = self.key(x).flatten(2).transpose(-1, -2).unsqueeze(1)
        v = self.value(x).flatten(2).transpose(-1, -2).unsqueeze(1)
        if _fused_attention():
            # torch's fused kernel (default scale key_dim ** -0.5 == self.scale) never materialises the N x M
            # attention matrix: as fast as timm, where the explicit form below was up to 30% slower at
            # 640x640, batch 8 (tests/benchmarks/bench_modules.py). Its fast path wants contiguous inputs.
            o = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        else:
            o = ((q * self.scale) @ k.transpose(-1, -2)).softmax(dim=-1) @ v
        return self.out(o.transpose(-1, -2).reshape(b, self.heads * self.key_dim, h, w))


def _fused_attention():
    """Use F.scaled_dot_product_attention (torch >= 2.0) except while tracing or scripting, so that the
    TorchScript-based ONNX exporters of older targets keep seeing plain matmul + softmax."""
    return hasattr(F, "scaled_dot_product_attention") and not (torch.jit.is_tracing() or torch.jit.is_scripting())


class MobileMQA(nn.Module):
    """Residual Mobile MQA block: BatchNorm -> multi-query attention -> layer scale, plus the input."""

    def __init__(self, c1, c2, heads=4, key_dim=64, kv_stride=1, layer_scale=None):
        super().__init__()
        self.norm = nn.BatchNorm2d(c1)
        self.attn = MultiQueryAttention2d(c1, c2, heads, key_dim, kv_stride)
        self.scale = _layer_scale(c2, layer_scale)
        self.residual = c1 == c2

    def forward(self, x):
        y = self.scale(self.attn(self.norm(x)))
        return x + y if self.residual else y


# ---------------------------------------------------------------------------------------------------------
# Architecture tables.  Each entry is (kind, out_channels, stride, repeats, options); only the first repeat
# carries the stride.  A table lists the four resolution levels after the stem (output strides 4, 8, 16, 32).
# ---------------------------------------------------------------------------------------------------------


def _conv(c, k, s=1):
    return ("conv", c, s, 1, {"k": k})


def _fused(c, k, s, e):
    return ("fused", c, s, 1, {"k": k, "expand": e})


def _uib(c, start_k, mid_k, s, e, n=1):
    return ("uib", c, s, n, {"start_k": start_k, "mid_k": mid_k, "expand": e})


def _mqa(c, heads, key_dim, kv_stride=1):
    return ("mqa", c, 1, 1, {"heads": heads, "key_dim": key_dim, "kv_stride": kv_stride})


CONV_SMALL = (
    [_conv(32, 3, 2), _conv(32, 1)],
    [_conv(96, 3, 2), _conv(64, 1)],
    [_uib(96, 5, 5, 2, 3), _uib(96, 0, 3, 1, 2, n=4), _uib(96, 3, 0, 1, 4)],
    [
        _uib(128, 3, 3, 2, 6), _uib(128, 5, 5, 1, 4), _uib(128, 0, 5, 1, 4), _uib(128, 0, 5, 1, 3),
        _uib(128, 0, 3, 1, 4, n=2), _conv(960, 1),
    ],
)

CONV_MEDIUM = (
    [_fused(48, 3, 2, 4)],
    [_uib(80, 3, 5, 2, 4), _uib(80, 3, 3, 1, 2)],
    [
        _uib(160, 3, 5, 2, 6), _uib(160, 3, 3, 1, 4, n=2), _uib(160, 3, 5, 1, 4), _uib(160, 3, 3, 1, 4),
        _uib(160, 3, 0, 1, 4), _uib(160, 0, 0, 1, 2), _uib(160, 3, 0, 1, 4),
    ],
    [
        _uib(256, 5, 5, 2, 6), _uib(256, 5, 5, 1, 4), _uib(256, 3, 5, 1, 4, n=2), _uib(256, 0, 0, 1, 4),
        _uib(256, 3, 0, 1, 4), _uib(256, 3, 5, 1, 2), _uib(256, 5, 5, 1, 4), _uib(256, 0, 0, 1, 4, n=2),
        _uib(256, 5, 0, 1, 2), _conv(960, 1),
    ],
)

CONV_LARGE = (
    [_fused(48, 3, 2, 4)],
    [_uib(96, 3, 5, 2, 4), _uib(96, 3, 3, 1, 4)],
    [
        _uib(192, 3, 5, 2, 4), _uib(192, 3, 3, 1, 4, n=3), _uib(192, 3, 5, 1, 4), _uib(192, 5, 3, 1, 4, n=5),
        _uib(192, 3, 0, 1, 4),
    ],
    [
        _uib(512, 5, 5, 2, 4, n=4), _uib(512, 5, 0, 1, 4), _uib(512, 5, 3, 1, 4), _uib(512, 5, 0, 1, 4, n=2),
        _uib(512, 5, 3, 1, 4), _uib(512, 5, 5, 1, 4), _uib(512, 5, 0, 1, 4, n=3), _conv(960, 1),
    ],
)

# Hybrids: stride-16 attention uses kv_stride 2, stride-32 attention attends at full resolution.
HYBRID_MEDIUM = (
    [_fused(48, 3, 2, 4)],
    [_uib(80, 3, 5, 2, 4), _uib(80, 3, 3, 1, 2)],
    [
        _uib(160, 3, 5, 2, 6), _uib(160, 0, 0, 1, 2), _uib(160, 3, 3, 1, 4), _uib(160, 3, 5, 1, 4),
        _mqa(160, 4, 64, 2), _uib(160, 3, 3, 1, 4),
        _mqa(160, 4, 64, 2), _uib(160, 3, 0, 1, 4),
        _mqa(160, 4, 64, 2), _uib(160, 3, 3, 1, 4),
        _mqa(160, 4, 64, 2), _uib(160, 3, 0, 1, 4),
    ],
    [
        _uib(256, 5, 5, 2, 6), _uib(256, 5, 5, 1, 4), _uib(256, 3, 5, 1, 4, n=2), _uib(256, 0, 0, 1, 2),
        _uib(256, 3, 5, 1, 2), _uib(256, 0, 0, 1, 2), _uib(256, 0, 0, 1, 4),
        _mqa(256, 4, 64), _uib(256, 3, 0, 1, 4),
        _mqa(256, 4, 64), _uib(256, 5, 5, 1, 4),
        _mqa(256, 4, 64), _uib(256, 5, 0, 1, 4),
        _mqa(256, 4, 64), _uib(256, 5, 0, 1, 4),
        _conv(960, 1),
    ],
)

HYBRID_LARGE = (
    [_fused(48, 3, 2, 4)],
    [_uib(96, 3, 5, 2, 4), _uib(96, 3, 3, 1, 4)],
    [
        _uib(192, 3, 5, 2, 4), _uib(192, 3, 3, 1, 4, n=3), _uib(192, 3, 5, 1, 4), _uib(192, 5, 3, 1, 4, n=2),
        _mqa(192, 8, 48, 2), _uib(192, 5, 3, 1, 4),
        _mqa(192, 8, 48, 2), _uib(192, 5, 3, 1, 4),
        _mqa(192, 8, 48, 2), _uib(192, 5, 3, 1, 4),
        _mqa(192, 8, 48, 2), _uib(192, 3, 0, 1, 4),
    ],
    [
        _uib(512, 5, 5, 2, 4, n=4), _uib(512, 5, 0, 1, 4), _uib(512, 5, 3, 1, 4), _uib(512, 5, 0, 1, 4, n=2),
        _uib(512, 5, 3, 1, 4), _uib(512, 5, 5, 1, 4),
        _mqa(512, 8, 64), _uib(512, 5, 0, 1, 4),
        _mqa(512, 8, 64), _uib(512, 5, 0, 1, 4),
        _mqa(512, 8, 64), _uib(512, 5, 0, 1, 4),
        _mqa(512, 8, 64), _uib(512, 5, 0, 1, 4),
        _conv(960, 1),
    ],
)


def _make_block(kind, c1, c2, s, opts, act, layer_scale):
    if kind == "conv":
        return ConvBNAct(c1, c2, opts["k"], s, act=act)
    if kind == "fused":
        return FusedIB(c1, c2, opts["k"], s, opts["expand"], act=act)
    if kind == "uib":
        return UIB(c1, c2, opts["start_k"], opts["mid_k"], s, opts["expand"], act=act, layer_scale=layer_scale)
    if kind == "mqa":
        return MobileMQA(c1, c2, opts["heads"], opts["key_dim"], opts["kv_stride"], layer_scale=layer_scale)
    raise ValueError(f"unknown block kind {kind!r}")


class _MobileNetV4(nn.Module):
    """Shared body: 3x3 stride-2 stem followed by four levels built from an architecture table.

    `weights`: a checkpoint of the timm model of the same name (a .pth / .pt / .safetensors file, or a timm tag
    in the local cache, e.g. mobilenetv4_conv_small.e2400_r224_in1k) to load; what was loaded is recorded in
    `loaded_weights`.
    """

    arch = ()
    stem_channels = 32
    act = "relu"
    layer_scale = None  # initial layer-scale value (hybrids only)

    def __init__(self, c1=3, weights=None):
        super().__init__()
        self.stem = ConvBNAct(c1, self.stem_channels, 3, 2, act=self.act)
        channels, strides = [self.stem_channels], [2]
        levels = []
        c_in, stride = self.stem_channels, 2
        for table in self.arch:
            blocks = []
            for kind, c_out, s, repeats, opts in table:
                for i in range(repeats):
                    s_i = s if i == 0 else 1
                    blocks.append(_make_block(kind, c_in, c_out, s_i, opts, self.act, self.layer_scale))
                    c_in, stride = c_out, stride * s_i
            levels.append(nn.Sequential(*blocks))
            channels.append(c_in)
            strides.append(stride)
        self.levels = nn.ModuleList(levels)
        self.feature_channels = tuple(channels)
        self.feature_strides = tuple(strides)
        self._init_weights()
        self.loaded_weights = None
        if weights:  # the helper yolopatch ships beside this file (recipe.toml lists it)
            from .yolopatch_weights import load_reference_weights
            self.loaded_weights = load_reference_weights(self, weights)

    def reference_layouts(self) -> dict:
        """Our module names -> timm's mobilenetv4_* (and its head). timm's blocks.l.i are our levels.l.i, except
        the final 1x1 conv to 960 channels, a stage of its own there (blocks.4.0)."""
        names = {"stem.conv": "conv_stem", "stem.bn": "bn1"}
        for level, blocks in enumerate(self.levels):
            for i, block in enumerate(blocks):
                ours = f"levels.{level}.{i}"
                ref = "blocks.4.0" if level == len(self.levels) - 1 and i == len(blocks) - 1 else f"blocks.{level}.{i}"
                if isinstance(block, ConvBNAct):
                    names.update({f"{ours}.conv": f"{ref}.conv", f"{ours}.bn": f"{ref}.bn1"})
                elif isinstance(block, FusedIB):
                    names.update({f"{ours}.expand.conv": f"{ref}.conv_exp", f"{ours}.expand.bn": f"{ref}.bn1",
                                  f"{ours}.project.conv": f"{ref}.conv_pwl", f"{ours}.project.bn": f"{ref}.bn2"})
                elif isinstance(block, UIB):
                    names.update({f"{ours}.dw_start": f"{ref}.dw_start", f"{ours}.pw_expand": f"{ref}.pw_exp",
                                  f"{ours}.dw_mid": f"{ref}.dw_mid", f"{ours}.pw_project": f"{ref}.pw_proj",
                                  f"{ours}.scale": f"{ref}.layer_scale"})
                else:  # MobileMQA
                    names.update({f"{ours}.norm": f"{ref}.norm", f"{ours}.scale": f"{ref}.layer_scale",
                                  f"{ours}.attn.query": f"{ref}.attn.query.proj",
                                  f"{ours}.attn.out": f"{ref}.attn.output.proj"})
                    for branch in ("key", "value"):
                        parts = ["down_conv", "norm", "proj"] if len(getattr(block.attn, branch)) == 3 else ["proj"]
                        names.update({f"{ours}.attn.{branch}.{j}": f"{ref}.attn.{branch}.{part}"
                                      for j, part in enumerate(parts)})
        return {"timm mobilenetv4": (names, ("conv_head.", "norm_head.", "classifier."))}

    def _init_weights(self):
        """timm's initialisation: _init_weight_goog for every conv and BatchNorm, then Xavier uniform for the
        attention projections (timm's MultiQueryAttention2d.init_weights)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # As in timm, where Xavier appeared to train the hybrids more stably.
        for m in self.modules():
            if isinstance(m, MultiQueryAttention2d):
                for conv in m.modules():
                    if isinstance(conv, nn.Conv2d):
                        nn.init.xavier_uniform_(conv.weight)

    def forward(self, x):
        x = self.stem(x)
        outputs = [x]
        for level in self.levels:
            x = level(x)
            outputs.append(x)
        return outputs


class MobileNetV4ConvSmall(_MobileNetV4):
    """MNv4-Conv-S: outputs (32, 32, 64, 96, 960) channels at strides (2, 4, 8, 16, 32)."""

    arch = CONV_SMALL
    stem_channels = 32


class MobileNetV4ConvMedium(_MobileNetV4):
    """MNv4-Conv-M: outputs (32, 48, 80, 160, 960) channels at strides (2, 4, 8, 16, 32)."""

    arch = CONV_MEDIUM
    stem_channels = 32


class MobileNetV4ConvLarge(_MobileNetV4):
    """MNv4-Conv-L: outputs (24, 48, 96, 192, 960) channels at strides (2, 4, 8, 16, 32)."""

    arch = CONV_LARGE
    stem_channels = 24


class MobileNetV4HybridMedium(_MobileNetV4):
    """MNv4-Hybrid-M: Conv-M-like body with Mobile MQA blocks; outputs as MobileNetV4ConvMedium."""

    arch = HYBRID_MEDIUM
    stem_channels = 32
    layer_scale = 1e-5


class MobileNetV4HybridLarge(_MobileNetV4):
    """MNv4-Hybrid-L: Conv-L-like body with Mobile MQA blocks and GELU; outputs as MobileNetV4ConvLarge."""

    arch = HYBRID_LARGE
    stem_channels = 24
    act = "gelu"
    layer_scale = 1e-5
