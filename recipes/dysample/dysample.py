"""DySample: an ultra-lightweight dynamic upsampler (Liu, Lu, Fu and Cao, "Learning to Upsample by
Learning to Sample", ICCV 2023, arXiv:2308.15085), as the authors' dysample.py (tiny-smart/dysample).

Upsampling by point sampling: a 1x1 conv predicts, for every output pixel, an offset from the position
bilinear upsampling would sample; the input is then sampled there with bilinear interpolation
(grid_sample). Channels are split into `groups` that share offsets.
  style "lp": offsets predicted from the low-resolution input (2 * groups * scale^2 channels);
  style "pl": the input is pixel-shuffled to high resolution first, and offsets (2 * groups channels)
              are predicted there and pixel-unshuffled back.
  scope: static, offsets scaled by 0.25; dynamic (dyscope=True), scaled by 0.5 * sigmoid of a second
         1x1 conv without bias.
"""

import sys

import torch
import torch.nn.functional as F
from torch import nn


def exporting_to_onnx() -> bool:
    """True while torch.onnx traces the module; torch.onnx is loaded by then, so a plain forward does
    not pay for importing it."""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def bilinear_border(source: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """grid_sample(bilinear, padding_mode="border", align_corners=False) written with gathers, which
    ONNX exports at any opset: source (B, C, H, W) sampled at column u, row v (B, H2, W2), in pixel
    indices (pixel centres at integers), positions clamped to the image."""
    b, c, h, w = source.shape
    u = u.clamp(0, w - 1)
    v = v.clamp(0, h - 1)
    u0, v0 = u.floor(), v.floor()
    fu, fv = (u - u0).unsqueeze(1), (v - v0).unsqueeze(1)
    u0, v0 = u0.long(), v0.long()
    u1, v1 = (u0 + 1).clamp(max=w - 1), (v0 + 1).clamp(max=h - 1)
    flat = source.reshape(b, c, h * w)

    def at(row, col):
        index = (row * w + col).reshape(b, 1, -1).expand(b, c, row.shape[1] * row.shape[2])
        return flat.gather(2, index).view(b, c, row.shape[1], row.shape[2])

    top = at(v0, u0) * (1 - fu) + at(v0, u1) * fu
    bottom = at(v1, u0) * (1 - fu) + at(v1, u1) * fu
    return top * (1 - fv) + bottom * fv


class DySample(nn.Module):
    """Upsampler: DySample(c1, scale=2, style="lp", groups=4, dyscope=False) maps (N, c1, H, W) to
    (N, c1, scale * H, scale * W)."""

    def __init__(self, c1: int, scale: int = 2, style: str = "lp", groups: int = 4, dyscope: bool = False):
        super().__init__()
        if style not in ("lp", "pl"):
            raise ValueError(f"DySample style={style!r} must be 'lp' or 'pl'")
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"DySample scale={scale!r} must be a positive integer")
        if groups < 1 or c1 % groups:
            raise ValueError(f"DySample groups={groups} must divide the input width {c1}")
        if style == "pl" and c1 % (scale * scale):
            raise ValueError(f"DySample style 'pl' needs the input width {c1} divisible by scale^2={scale * scale}")
        self.scale, self.style, self.groups = scale, style, groups
        if style == "pl":
            c_in, c_out = c1 // (scale * scale), 2 * groups
        else:
            c_in, c_out = c1, 2 * groups * scale * scale
        self.offset = nn.Conv2d(c_in, c_out, 1)
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        if dyscope:
            self.scope = nn.Conv2d(c_in, c_out, 1, bias=False)
            nn.init.zeros_(self.scope.weight)
        else:
            self.scope = None
        self.register_buffer("init_pos", self._initial_positions())

    def _initial_positions(self) -> torch.Tensor:
        """Offsets (x, y) of the scale x scale sub-pixel centres from their low-resolution pixel centre,
        in input pixels, per group: layout [xy][group][sub-row][sub-column], shape (1, 2*G*s*s, 1, 1)."""
        s = self.scale
        h = (torch.arange(s, dtype=torch.float32) - (s - 1) / 2) / s
        along_x = h.view(1, s).expand(s, s)   # varies with the sub-column
        along_y = h.view(s, 1).expand(s, s)   # varies with the sub-row
        per_group = torch.stack((along_x, along_y)).reshape(2, 1, s * s).expand(2, self.groups, s * s)
        return per_group.reshape(1, -1, 1, 1).clone()

    def _scaled_offsets(self, source: torch.Tensor) -> torch.Tensor:
        offset = self.offset(source)
        if self.scope is None:
            return offset * 0.25
        return offset * torch.sigmoid(self.scope(source)) * 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.style == "pl":
            offset = F.pixel_unshuffle(self._scaled_offsets(F.pixel_shuffle(x, self.scale)), self.scale)
        else:
            offset = self._scaled_offsets(x)
        return self._sample(x, offset)

    def _sample(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s, g = self.scale, self.groups
        # Positions in float32 even for half-precision inputs: bfloat16 cannot tell neighbouring pixels
        # apart beyond 256 of them.
        dtype = torch.promote_types(x.dtype, torch.float32)
        offset = (offset.to(dtype) + self.init_pos.to(dtype)).view(b, 2, g * s * s, h, w)
        # Sampling positions in input pixels (pixel i spans [i, i + 1)), one channel per group and
        # sub-pixel, rearranged to the high-resolution layout (b * groups, s * h, s * w).
        px = torch.arange(w, device=x.device, dtype=dtype).view(1, 1, 1, w) + 0.5 + offset[:, 0]
        py = torch.arange(h, device=x.device, dtype=dtype).view(1, 1, h, 1) + 0.5 + offset[:, 1]
        px = F.pixel_shuffle(px, s).reshape(b * g, s * h, s * w)
        py = F.pixel_shuffle(py, s).reshape(b * g, s * h, s * w)
        source = x.reshape(b * g, c // g, h, w).to(dtype)
        if exporting_to_onnx():
            out = bilinear_border(source, px - 0.5, py - 0.5)  # ONNX GridSample needs opset 16
        else:
            # grid_sample's normalised coordinates (align_corners=False): -1 and 1 are the outer pixel edges
            grid = torch.stack((px * (2.0 / w) - 1, py * (2.0 / h) - 1), -1)
            out = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.reshape(b, c, s * h, s * w).to(x.dtype)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, style={self.style!r}, groups={self.groups}, dyscope={self.scope is not None}"
