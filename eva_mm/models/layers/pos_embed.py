"""Resizing of position embeddings and patch kernels between resolutions.

One implementation serves the run-time resize inside :class:`EVAViT` and the
load-time resize of the checkpoint converters, so both give the same numbers.
2-D grids (position embeddings, BEiT bias tables) are resampled by timm's
``resample_abs_pos_embed`` (bicubic, no antialiasing, as the official EVA
code); the rest with ``torch.nn.functional.interpolate`` (SciPy >= 1.14
removed ``interp2d``, which the BEiT resizers of mmseg/mmpretrain call),
except EVA-01's 1-D cubic ``'beit'`` resize of decomposed tables.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed


def resize_pos_embed(pos_embed: torch.Tensor,
                     src_shape: Tuple[int, int],
                     dst_shape: Tuple[int, int],
                     num_extra_tokens: int = 1,
                     mode: str = 'bicubic') -> torch.Tensor:
    """Resize a learned absolute position embedding to another patch grid.

    Args:
        pos_embed: Embedding of shape (1, num_extra_tokens + H * W, C).
        src_shape: The grid (H, W) that ``pos_embed`` was learned for.
        dst_shape: The grid to resize to.
        num_extra_tokens: Leading tokens (cls) that are kept as they are.
        mode: Interpolation mode of ``F.interpolate``.

    Returns:
        The embedding of shape (1, num_extra_tokens + H' * W', C).
    """
    if tuple(src_shape) == tuple(dst_shape):
        return pos_embed
    src_h, src_w = src_shape
    if pos_embed.shape[1] != num_extra_tokens + src_h * src_w:
        raise ValueError(
            f'pos_embed has {pos_embed.shape[1]} tokens, which does not '
            f'match a {src_h}x{src_w} grid plus {num_extra_tokens} extra '
            'token(s).')
    # timm's antialiasing (its default) would change upsampled values too:
    # torch's antialiased bicubic uses another kernel.
    return resample_abs_pos_embed(
        pos_embed,
        list(dst_shape),
        [src_h, src_w],
        num_prefix_tokens=num_extra_tokens,
        interpolation=mode,
        antialias=False)


def resize_patch_kernel(weight: torch.Tensor,
                        patch_size: Tuple[int, int],
                        mode: str = 'bicubic') -> torch.Tensor:
    """Resize a patch-embedding conv kernel, e.g. 14x14 -> 16x16.

    This is what the official EVA ``interpolate_patch_14to16`` script does to
    reuse a patch-14 model at patch 16 for the dense tasks.

    Args:
        weight: Kernel of shape (C_out, C_in, kh, kw) or, for a video tubelet,
            (C_out, C_in, t, kh, kw).
        patch_size: Target (kh, kw).
        mode: Interpolation mode of ``F.interpolate``.

    Returns:
        The resized kernel, in the input dtype.
    """
    if tuple(weight.shape[-2:]) == tuple(patch_size):
        return weight
    lead = weight.shape[:-2]
    flat = weight.reshape(-1, 1, *weight.shape[-2:]).float()
    flat = F.interpolate(
        flat, size=tuple(patch_size), mode=mode, align_corners=False)
    return flat.reshape(*lead, *patch_size).to(weight.dtype)


def resize_rel_pos(rel_pos: torch.Tensor,
                   length: int,
                   mode: str = 'linear') -> torch.Tensor:
    """Resize a decomposed relative position table (ViTDet).

    Args:
        rel_pos: Table of shape (L, head_dim) with L = 2 * size - 1.
        length: Target length 2 * size' - 1.
        mode: ``'linear'``: ViTDet's linear interpolation over evenly spaced
            offsets (``interp_type="vitdet"`` of the official EVA-01
            detector). ``'beit'``: the official EVA-01 1536 px evaluation
            (``interp_type="beit"``, EVA-01/det/detectron2/modeling/
            backbone/utils.py:90-118): a cubic spline through the table
            placed on a geometric grid of offsets, see
            :func:`beit_rel_pos_offsets`, evaluated at evenly spaced
            offsets -length // 2 ... length // 2.

    Returns:
        Table of shape (length, head_dim).
    """
    if rel_pos.shape[0] == length:
        return rel_pos
    if mode == 'beit':
        return _resize_rel_pos_beit(rel_pos, length)
    if mode != 'linear':
        raise ValueError(
            f"Relative position resize mode must be 'linear' or 'beit', got "
            f'{mode!r}.')
    table = rel_pos.float().t().unsqueeze(0)
    table = F.interpolate(table, size=length, mode='linear')
    return table.squeeze(0).t().to(rel_pos.dtype)


# The ratio of EVA-01's geometric grid (utils.py:99, fixed there, not solved
# for as BEiT does).
BEIT_REL_POS_RATIO = 1.0903078


def beit_rel_pos_offsets(src_len: int) -> np.ndarray:
    """Where EVA-01's BEiT-style resize places a table's entries.

    The entry ``i`` of a table of odd length L stands for the offset
    ``x_i``: 0 in the middle and, outwards, 1, 1 + q, 1 + q + q^2, ...
    (mirrored for negative offsets) with q = 1.0903078, so the table spreads
    over a wider range than its L - 1 integer offsets.

    Args:
        src_len: The table length L.

    Returns:
        The L offsets, ascending.
    """
    steps = BEIT_REL_POS_RATIO**np.arange(1, src_len // 2)
    right = np.concatenate([[1.0], 1.0 + np.cumsum(steps)])
    return np.concatenate([-right[::-1], [0.0], right])


def _resize_rel_pos_beit(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """The ``'beit'`` mode of :func:`resize_rel_pos` (see there)."""
    # SciPy's not-a-knot cubic spline is what the official interp1d(kind=
    # 'cubic', fill_value='extrapolate') computes, for all columns at once.
    if rel_pos.is_meta:
        # Shape checks build models and convert checkpoints without data.
        return rel_pos.new_empty((length, rel_pos.shape[1]))
    from scipy.interpolate import CubicSpline
    src = rel_pos.detach().double().cpu().numpy()
    if src.shape[0] < 4:
        raise ValueError(f'A table of length {src.shape[0]} is too short for '
                         "the cubic 'beit' resize (at least 4 entries).")
    spline = CubicSpline(
        beit_rel_pos_offsets(src.shape[0]), src, axis=0,
        bc_type='not-a-knot', extrapolate=True)
    half = length // 2
    dst = spline(np.arange(-half, half + 0.1, 1.0))
    return torch.from_numpy(dst).to(rel_pos.dtype).to(rel_pos.device)


def resize_rel_pos_bias_table(table: torch.Tensor,
                              src_shape: Tuple[int, int],
                              dst_shape: Tuple[int, int],
                              num_extra: int = 3) -> torch.Tensor:
    """Resize a BEiT relative position bias table to another window.

    Args:
        table: Table of shape ((2H-1)(2W-1) + num_extra, num_heads); the last
            ``num_extra`` rows are the cls-to-token, token-to-cls and cls-to-cls
            biases.
        src_shape: The window (H, W) of ``table``.
        dst_shape: The window (H', W') to resize to.
        num_extra: Number of trailing rows for the cls token.

    Returns:
        Table of shape ((2H'-1)(2W'-1) + num_extra, num_heads).
    """
    if tuple(src_shape) == tuple(dst_shape):
        return table
    src_len = [2 * src_shape[0] - 1, 2 * src_shape[1] - 1]
    dst_len = [2 * dst_shape[0] - 1, 2 * dst_shape[1] - 1]
    grid, extra = table[:-num_extra], table[-num_extra:]
    # The table's rows are a (2H-1) x (2W-1) grid of offsets with one channel
    # per head: a position embedding to timm. Not timm's
    # resize_rel_pos_bias_table_simple, which takes the source window to be
    # square (EVAViT's grids and run-time windows need not be) and
    # interpolates in the table's dtype.
    grid = resample_abs_pos_embed(
        grid[None], dst_len, src_len, num_prefix_tokens=0, antialias=False)
    return torch.cat([grid[0], extra], dim=0)


def resize_pos_embed_3d(pos_embed: torch.Tensor,
                        src_shape: Tuple[int, int, int],
                        dst_shape: Tuple[int, int, int],
                        num_extra_tokens: int = 1) -> torch.Tensor:
    """Trilinearly resize a space-time position embedding, e.g. 8 -> 16 frames.

    A spatial (image) embedding is the case ``src_shape[0] == 1``: the
    interpolation from one frame then copies it to every frame, which is the
    tiling that inflates an image model to video.

    Args:
        pos_embed: Embedding of shape (1, num_extra_tokens + T * H * W, C),
            tokens ordered time-major as a Conv3d patch embedding lays them.
        src_shape: The grid (T, H, W) that ``pos_embed`` was learned for.
        dst_shape: The grid to resize to.
        num_extra_tokens: Leading tokens (cls) that are kept as they are.

    Returns:
        The embedding of shape (1, num_extra_tokens + T' * H' * W', C).
    """
    if tuple(src_shape) == tuple(dst_shape):
        return pos_embed
    src_t, src_h, src_w = src_shape
    if pos_embed.shape[1] != num_extra_tokens + src_t * src_h * src_w:
        raise ValueError(
            f'pos_embed has {pos_embed.shape[1]} tokens, which does not '
            f'match a {src_t}x{src_h}x{src_w} grid plus {num_extra_tokens} '
            'extra token(s).')
    extra, grid = (pos_embed[:, :num_extra_tokens],
                   pos_embed[:, num_extra_tokens:])
    dim = grid.shape[-1]
    grid = grid.reshape(1, src_t, src_h, src_w, dim).permute(0, 4, 1, 2, 3)
    grid = F.interpolate(
        grid.float(),
        size=tuple(dst_shape),
        mode='trilinear',
        align_corners=False)
    grid = grid.to(pos_embed.dtype).flatten(2).transpose(1, 2)
    return torch.cat([extra, grid], dim=1)


def inflate_patch_kernel(weight: torch.Tensor,
                         tubelet_size: int) -> torch.Tensor:
    """Inflate a 2-D patch kernel to a 3-D tubelet kernel (I3D inflation).

    The kernel is repeated ``tubelet_size`` times over time and divided by
    ``tubelet_size``, so a tubelet of identical frames embeds exactly as one
    frame does in the image model.

    Args:
        weight: Image kernel of shape (C_out, C_in, kh, kw).
        tubelet_size: Temporal kernel length t.

    Returns:
        Kernel of shape (C_out, C_in, t, kh, kw), in the input dtype.
    """
    if weight.dim() != 4:
        raise ValueError('Only a 4-D image kernel can be inflated, got shape '
                         f'{tuple(weight.shape)}.')
    inflated = weight.unsqueeze(2).repeat(1, 1, tubelet_size, 1, 1)
    return inflated / tubelet_size


@dataclass(frozen=True)
class TargetSizes:
    """The sizes a checkpoint's sized tensors are fitted to: a model's.

    Attributes:
        kernel_shape: The patch kernel's shape, (C_out, C_in, kh, kw) or
            (C_out, C_in, t, kh, kw) for a video tubelet; ``None`` keeps the
            checkpoint's.
        pos_grid: The grid the absolute position embedding is learned for,
            (H, W) or (T, H, W) for a space-time one; ``None`` keeps the
            checkpoint's.
        with_cls_token: The position embedding starts with a cls position.
        rel_pos_lengths: Length of each decomposed relative position table,
            by key (``blocks.N.attn.rel_pos_h`` / ``_w``).
        rel_pos_windows: Window (H, W) of each BEiT relative position bias
            table, by key (``blocks.N.attn.relative_position_bias_table``).
        rel_pos_resize: How decomposed tables are resized, see
            :func:`resize_rel_pos`.
    """
    kernel_shape: Optional[Tuple[int, ...]] = None
    pos_grid: Optional[Tuple[int, ...]] = None
    with_cls_token: bool = True
    rel_pos_lengths: Mapping[str, int] = field(default_factory=dict)
    rel_pos_windows: Mapping[str, Tuple[int, int]] = field(
        default_factory=dict)
    rel_pos_resize: str = 'linear'


def _checkpoint_grid(tokens: int,
                     grid: Tuple[int, ...]) -> Optional[Tuple[int, ...]]:
    """The grid of a checkpoint's ``tokens`` positions, for a model ``grid``.

    The file does not record its grid. The model's is taken when the count
    fits it; a space-time model takes whole frames of its spatial grid
    (one frame: an image embedding, tiled over time); otherwise the grid is
    taken to be square, as every released EVA / ViT pre-training grid is.

    Returns:
        The grid, or ``None`` if the count fits none of these.
    """
    if tokens <= 0:
        return None
    if tokens == math.prod(grid):
        return tuple(grid)
    frame = math.prod(grid[-2:])
    if len(grid) == 3 and tokens % frame == 0:
        return (tokens // frame, *grid[-2:])
    side = math.isqrt(tokens)
    if side * side != tokens:
        return None
    return (side, side) if len(grid) == 2 else (1, side, side)


def _fit_pos_embed(loaded: torch.Tensor, target: TargetSizes,
                   src_extra: int) -> torch.Tensor:
    """``loaded`` on the target grid, or unchanged if it cannot be."""
    grid, extra = target.pos_grid, int(target.with_cls_token)
    if src_extra < extra:
        return loaded  # no cls position to give the model
    # A model without cls token drops the checkpoint's cls position.
    loaded = loaded[:, src_extra - extra:]
    src_grid = _checkpoint_grid(loaded.shape[1] - extra, grid)
    if src_grid is None:
        return loaded
    if len(grid) == 2:
        return resize_pos_embed(loaded, src_grid, grid, extra)
    if src_grid[1:] != grid[1:]:
        # Another spatial grid: resize the image embedding as the image
        # model does, then tile it over time.
        loaded = resize_pos_embed(loaded, src_grid[1:], grid[1:], extra)
        src_grid = (1, *grid[1:])
    return resize_pos_embed_3d(loaded, src_grid, grid, extra)


def fit_state_dict(state_dict: Dict[str, torch.Tensor],
                   target: TargetSizes,
                   prefix: str = '',
                   src_extra_tokens: Optional[int] = None) -> None:
    """Fit the sized tensors of EVAViT weights to a model's sizes, in place.

    The one resizing path of every way EVAViT weights are loaded: the model's
    load pre-hook (mmengine's ``load_checkpoint``), ``init_cfg=Pretrained``
    and the converters. The patch kernel is resized (14 -> 16) and inflated
    to a tubelet, the position embedding resized to the model's grid (a cls
    position dropped for a model without cls token, an image embedding tiled
    over time), and relative position tables resized to each block's
    window or grid. A tensor that cannot be fitted is left as it is, for the
    loader's key report.

    Args:
        state_dict: The weights; entries are replaced by resized ones.
        target: The model's sizes.
        prefix: The weights' prefix in ``state_dict``.
        src_extra_tokens: Leading non-patch positions in the checkpoint's
            ``pos_embed``. ``None``: one if the checkpoint holds a
            ``cls_token``, else one exactly when the embedding is one longer
            than the model's grid (a cls position without cls token, as
            ViTDet's ``pretrain_use_cls_token`` files have), else none.
    """
    kernel_key = prefix + 'patch_embed.proj.weight'
    if target.kernel_shape is not None and kernel_key in state_dict:
        loaded, shape = state_dict[kernel_key], target.kernel_shape
        if loaded.shape[:2] == shape[:2] and loaded.shape != shape:
            loaded = resize_patch_kernel(loaded, shape[-2:])
            if loaded.dim() == 4 and len(shape) == 5:
                loaded = inflate_patch_kernel(loaded, shape[2])
            state_dict[kernel_key] = loaded
    pos_key = prefix + 'pos_embed'
    if target.pos_grid is not None and pos_key in state_dict:
        loaded = state_dict[pos_key]
        if src_extra_tokens is None:
            src_extra_tokens = int(
                prefix + 'cls_token' in state_dict
                or loaded.shape[1] == math.prod(target.pos_grid) + 1)
        state_dict[pos_key] = _fit_pos_embed(loaded, target, src_extra_tokens)
    for key, length in target.rel_pos_lengths.items():
        if prefix + key in state_dict:
            state_dict[prefix + key] = resize_rel_pos(
                state_dict[prefix + key], length, target.rel_pos_resize)
    for key, window in target.rel_pos_windows.items():
        if prefix + key not in state_dict:
            continue
        table = state_dict[prefix + key]
        # The checkpoint's window: the model's if the length fits it, else
        # square, as BEiT's pre-training windows are.
        src = window
        if table.shape[0] - 3 != (2 * window[0] - 1) * (2 * window[1] - 1):
            side = (math.isqrt(table.shape[0] - 3) + 1) // 2
            if (2 * side - 1)**2 != table.shape[0] - 3:
                continue
            src = (side, side)
        state_dict[prefix + key] = resize_rel_pos_bias_table(
            table, src, window)
