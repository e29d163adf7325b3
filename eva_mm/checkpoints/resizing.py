"""Resizing converted EVAViT weights for another patch or image size.

The converters' entry to the model's one resizing path,
:func:`~eva_mm.models.layers.pos_embed.fit_state_dict`, with the target
model given by its sizes rather than built.
"""
import math
from typing import Mapping, Optional, Sequence, Union

import torch
from torch.nn.modules.utils import _pair

from eva_mm.models.layers.pos_embed import TargetSizes, fit_state_dict
from .state_dict import StateDict

SizeLike = Union[int, Sequence[int]]


def resize_checkpoint(state_dict: Mapping[str, torch.Tensor],
                      patch_size: Optional[SizeLike] = None,
                      img_size: Optional[SizeLike] = None,
                      num_extra_tokens: int = 1) -> StateDict:
    """Resize the patch kernel and the position embedding of a checkpoint.

    The converters' entry to :func:`fit_state_dict`, the resizing path of
    the model, with the target model given by its sizes. The kernel is
    resized bicubically, as the official EVA ``interpolate_patch_14to16``
    script does to run the patch-14 model at patch 16 for detection and
    segmentation; the position grid becomes ``img_size // patch_size``.

    Args:
        state_dict: EVAViT weights.
        patch_size: The target patch size; ``None`` keeps the kernel's.
        img_size: The target image size; ``None`` keeps the grid.
        num_extra_tokens: Leading non-patch tokens (the cls token) in the
            checkpoint's ``pos_embed``; the result keeps them.

    Returns:
        A new dict with the resized tensors (the others are shared).

    Raises:
        ValueError: If a size is needed that the checkpoint does not give,
            or the position embedding is not a square grid.
    """
    weights = dict(state_dict)
    kernel = weights.get('patch_embed.proj.weight')
    if patch_size is None and img_size is not None:
        if kernel is None:
            raise ValueError('Give patch_size: the checkpoint has no patch '
                             'kernel to read it from.')
        patch_size = tuple(kernel.shape[-2:])
    kernel_shape = None
    if kernel is not None and patch_size is not None:
        kernel_shape = (*kernel.shape[:-2], *_pair(patch_size))
    pos_grid = None
    if img_size is not None:
        # The model floors the grid the same way (EVAViT.patch_resolution).
        pos_grid = tuple(
            size // patch
            for size, patch in zip(_pair(img_size), _pair(patch_size)))
    target = TargetSizes(
        kernel_shape=kernel_shape,
        pos_grid=pos_grid,
        with_cls_token=bool(num_extra_tokens))
    fit_state_dict(weights, target, src_extra_tokens=num_extra_tokens)
    pos_embed = weights.get('pos_embed')
    if pos_grid is not None and pos_embed is not None and \
            pos_embed.shape[1] != num_extra_tokens + math.prod(pos_grid):
        raise ValueError(
            f'pos_embed of shape {tuple(pos_embed.shape)} does not hold a square '
            f'grid after {num_extra_tokens} extra token(s); pass the right '
            'num_extra_tokens.')
    return weights
