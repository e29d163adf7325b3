"""The position helpers equal a plain computation of what they stand for.

Written against the hand-written helpers and kept when they moved onto
timm's ``resample_abs_pos_embed`` and ``gen_relative_position_index``: the
references here are computed another way (``F.interpolate`` on the grid laid
out by hand, the BEiT bias entry by entry).
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

from eva_mm.models.layers import EVAAttention, TokenPositions
from eva_mm.models.layers.pos_embed import (resize_pos_embed,
                                            resize_rel_pos_bias_table)

SIZES = [((4, 4), (6, 8)), ((3, 5), (7, 2)), ((8, 8), (4, 4))]


def bicubic(grid: torch.Tensor, size) -> torch.Tensor:
    """(H, W, C) -> (H', W', C), bicubic without antialiasing."""
    out = F.interpolate(grid.permute(2, 0, 1)[None], size=tuple(size),
                        mode='bicubic', align_corners=False)
    return out[0].permute(1, 2, 0)


@pytest.mark.parametrize('src, dst', SIZES)
@pytest.mark.parametrize('extra', [0, 1])
def test_resize_pos_embed(src, dst, extra):
    torch.manual_seed(0)
    pos_embed = torch.randn(1, extra + src[0] * src[1], 16)
    grid = pos_embed[0, extra:].reshape(*src, 16)
    expected = torch.cat(
        [pos_embed[0, :extra], bicubic(grid, dst).reshape(-1, 16)])[None]
    resized = resize_pos_embed(pos_embed, src, dst, extra)
    torch.testing.assert_close(resized, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match='does not match a 2x2 grid'):
        resize_pos_embed(pos_embed, (2, 2), dst, extra)


@pytest.mark.parametrize('src, dst', SIZES)
def test_resize_rel_pos_bias_table(src, dst):
    torch.manual_seed(0)
    lengths = [(2 * h - 1, 2 * w - 1) for h, w in (src, dst)]
    table = torch.randn(lengths[0][0] * lengths[0][1] + 3, 4)
    # Row (dy + H - 1) * (2W - 1) + (dx + W - 1) holds offset (dy, dx); the
    # three cls rows stay at the end unchanged.
    grid = table[:-3].reshape(*lengths[0], 4)
    expected = torch.cat([bicubic(grid, lengths[1]).reshape(-1, 4),
                          table[-3:]])
    resized = resize_rel_pos_bias_table(table, src, dst)
    torch.testing.assert_close(resized, expected, rtol=0, atol=0)


@pytest.mark.parametrize('hw', [(2, 3), (4, 4), (1, 5)])
@pytest.mark.parametrize('with_cls', [False, True])
def test_beit_table_bias(hw, with_cls):
    h, w = hw
    extra = int(with_cls)
    attn = EVAAttention(8, 2, rel_pos='bias', rel_pos_size=hw,
                        num_extra_tokens=extra)
    table = torch.randn_like(attn.relative_position_bias_table)
    attn.relative_position_bias_table.data.copy_(table)
    cells = list(itertools.product(range(h), range(w)))
    num_rel = (2 * h - 1) * (2 * w - 1)
    index = torch.empty(extra + h * w, extra + h * w, dtype=torch.long)
    for (i, (yi, xi)), (j, (yj, xj)) in itertools.product(
            enumerate(cells), repeat=2):
        index[extra + i, extra + j] = ((yi - yj + h - 1) * (2 * w - 1) +
                                       xi - xj + w - 1)
    if with_cls:
        # BEiT's three extra table rows: cls->token, token->cls, cls->cls.
        index[0, :], index[:, 0], index[0, 0] = (num_rel, num_rel + 1,
                                                 num_rel + 2)
    expected = table[index].permute(2, 0, 1)[None]
    assert torch.equal(attn._table_bias(TokenPositions(hw)), expected)
