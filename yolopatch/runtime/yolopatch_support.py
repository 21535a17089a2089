"""Multi-output backbone support for parse_model and the forward loops.

Written into this package by yolopatch; `yolopatch revert` removes it.

A multi-output backbone declares `feature_channels` and `feature_strides` and returns one tensor per
declared output. It sits at YAML row 0 and fills one row per stride level: row k holds the output of
stride 2**(k + 1) (P1 .. P5 for a stride-32 backbone); a level it does not output stays empty (0
channels, no tensor). The next YAML row is numbered after the last level.
"""


def is_multi_output(module):
    return hasattr(module, "feature_strides") and hasattr(module, "feature_channels")


def backbone_row_channels(module):
    """Channels of each row the backbone fills, in row order; 0 for a level it does not output."""
    strides = [int(s) for s in module.feature_strides]
    rows = [0] * (strides[-1].bit_length() - 1)
    for channels, stride in zip(module.feature_channels, strides):
        rows[stride.bit_length() - 2] = int(channels)
    return rows


def claim_backbone_rows(module, ch):
    """parse_model: replace the backbone's single entry at the end of `ch` by one entry per row it fills.

    Returns how many rows beyond its own the backbone takes, so later rows are numbered after them; the
    module's index becomes the row of its last output, the one the forward loop appends for it.
    """
    if not is_multi_output(module):
        return 0
    rows = backbone_row_channels(module)
    ch[-1:] = rows
    extra = len(rows) - 1
    module.i += extra
    return extra


def spread_backbone_outputs(module, x, y, save):
    """Forward loops: store a backbone's outputs in the rows before its last one and return the last.

    The loop's own `y.append(...)` then stores the last output at the module's index.
    """
    if not is_multi_output(module):
        return x
    if len(x) != len(module.feature_strides):
        raise ValueError(
            f"{type(module).__name__} returned {len(x)} outputs but declares {len(module.feature_strides)}"
        )
    first_row = module.i - (int(module.feature_strides[-1]).bit_length() - 2)
    by_row = {int(s).bit_length() - 2: out for s, out in zip(module.feature_strides, x)}
    for row in range(module.i - first_row):
        y.append(by_row.get(row) if first_row + row in save else None)
    return x[-1]
