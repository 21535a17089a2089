"""Any timm model as a multi-output detection backbone.

``TimmBackbone`` wraps ``timm.create_model(..., features_only=True)``. The declared output channels
and strides come from timm's ``feature_info`` metadata, so building the backbone never runs a
forward pass. With ``out_indices=(1, 2, 3, 4)`` most timm CNNs (ResNets, MobileNets, EfficientNets,
ConvNeXts, ...) return their stride 4, 8, 16 and 32 feature maps.
"""

import timm
import torch.nn as nn

# Model names with these prefixes are resolved by timm from a hub or a local folder, so they are not
# in timm's registry of architecture names.
_EXTERNAL_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def _check_model_name(model_name):
    if not isinstance(model_name, str):
        raise TypeError(f"TimmBackbone: model_name must be a string, got {model_name!r}")
    if model_name.startswith(_EXTERNAL_PREFIXES) or timm.is_model(model_name):
        return
    close = timm.list_models(f"*{model_name.split('.')[0]}*")[:10]
    hint = f" Similar names: {', '.join(close)}." if close else ""
    raise ValueError(f"TimmBackbone: timm {timm.__version__} has no model named {model_name!r}.{hint}")


def _check_strides(model_name, strides):
    ok = all(s >= 2 and s & (s - 1) == 0 for s in strides) and all(a < b for a, b in zip(strides, strides[1:]))
    if not ok:
        raise ValueError(
            f"TimmBackbone: {model_name!r} with these out_indices gives strides {list(strides)}; a detection "
            "backbone needs strictly increasing powers of two (pick other out_indices or another model)"
        )


class TimmBackbone(nn.Module):
    """Feature pyramid of a timm model.

    Args:
        c1: input channels (timm adapts the stem when it is not 3).
        model_name: timm model name, e.g. "resnet18", "mobilenetv3_large_100", "efficientnet_b0".
        pretrained: load timm's pretrained weights (needs the network or a filled timm/HF cache).
        out_indices: which feature levels to return, in timm's numbering.
    """

    def __init__(self, c1=3, model_name="resnet18", pretrained=False, out_indices=(1, 2, 3, 4)):
        super().__init__()
        _check_model_name(model_name)
        out_indices = tuple(int(i) for i in out_indices)
        self.model_name = model_name
        self.model = self._create(model_name, bool(pretrained), out_indices, int(c1))
        info = self.model.feature_info
        self.feature_channels = tuple(int(c) for c in info.channels())
        self.feature_strides = tuple(int(s) for s in info.reduction())
        _check_strides(model_name, self.feature_strides)

    @staticmethod
    def _create(model_name, pretrained, out_indices, in_chans):
        kwargs = dict(pretrained=pretrained, features_only=True, out_indices=out_indices, in_chans=in_chans)
        if not pretrained:
            return timm.create_model(model_name, **kwargs)
        try:
            return timm.create_model(model_name, **kwargs)
        except Exception as e:  # download/cache failures surface as many exception types
            raise RuntimeError(
                f"TimmBackbone: could not load pretrained weights for {model_name!r} "
                f"({type(e).__name__}: {e}). Use pretrained=False (YAML args [{model_name!r}, False, "
                f"{list(out_indices)}]) or pre-download the weights into the timm / Hugging Face cache "
                "on a machine with network access."
            ) from e

    def forward(self, x):
        return list(self.model(x))
