"""What the ViT backbone formats share: size options, resizing, the report.

Every format that writes :class:`~eva_mm.models.EVAViT` weights (the EVA-01
and EVA-02 ViT files, the EVA-CLIP vision tower) takes the same
``--patch-size`` / ``--img-size`` / ``--classifier`` options and ends in
:func:`backbone_conversion`, which resizes through the model's resizing
path and describes the result.
"""
import argparse
import math
from typing import Dict, Mapping, Optional, Tuple

import torch

from ..errors import CheckpointError
from ..reading import unwrap_state_dict
from ..registry import Conversion, add_argument_once
from ..resizing import resize_checkpoint
from ..state_dict import StateDict, to_fp32


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'{text} is not a positive size')
    return value


def image_size(text: str) -> Tuple[int, int]:
    """``--img-size``: ``SIZE`` (a square image) or ``HxW``.

    The option takes one token, so that it never swallows the positional
    ``SRC DST`` after it; the tool joins ``--img-size H W`` into ``HxW``.

    Args:
        text: The option's value.

    Returns:
        (height, width).

    Raises:
        argparse.ArgumentTypeError: For anything else.
    """
    parts = text.lower().split('x')
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not an image size: give SIZE or HxW (e.g. 1024 or '
            '1024x768).')
    try:
        sizes = [_positive_int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not an image size: give SIZE or HxW (e.g. 1024 or '
            '1024x768).') from None
    return sizes[0], sizes[-1]


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """The resizing and classifier options of the backbone formats.

    Args:
        parser: The converter tool's parser.
    """
    add_argument_once(
        parser,
        '--patch-size',
        type=_positive_int,
        help='Resize the patch kernel to this size (bicubic), e.g. 16 to run '
        'the patch-14 giant at patch 16 as the EVA dense tasks do.')
    add_argument_once(
        parser,
        '--img-size',
        type=image_size,
        metavar='SIZE|HxW',
        help='Resize the position embedding to the grid of this image size: '
        'one value for a square image, or HxW (also written H W).')
    add_argument_once(
        parser,
        '--classifier',
        action='store_true',
        help="Keep the linear classifier 'head' and write an mmpretrain "
        'ImageClassifier checkpoint (backbone.*, head.fc.*).')


def _grid(state_dict: StateDict) -> Optional[int]:
    pos_embed = state_dict.get('pos_embed')
    if pos_embed is None:
        return None
    num_patches = pos_embed.shape[1] - int('cls_token' in state_dict)
    side = math.isqrt(num_patches)
    return side if side * side == num_patches else None


def describe_backbone(state_dict: StateDict) -> Dict[str, object]:
    """Sizes of EVAViT weights, for the output's ``meta`` and the report.

    Args:
        state_dict: EVAViT weights (no prefix).

    Returns:
        Width, depth, MLP width, patch size, position grid, cls token.
    """
    blocks = {
        int(key.split('.')[1])
        for key in state_dict if key.startswith('blocks.')
    }
    kernel = state_dict['patch_embed.proj.weight']
    # GELU MLP (EVA-01) or SwiGLU (EVA-02).
    fc1 = state_dict.get('blocks.0.mlp.fc1.weight',
                         state_dict.get('blocks.0.mlp.fc1_g.weight'))
    return dict(
        embed_dims=int(kernel.shape[0]),
        num_layers=len(blocks),
        mlp_hidden_dim=None if fc1 is None else int(fc1.shape[0]),
        patch_size=int(kernel.shape[-1]),
        pos_embed_grid=_grid(state_dict),
        with_cls_token='cls_token' in state_dict)


def backbone_conversion(source: StateDict, weights: StateDict,
                        args: argparse.Namespace) -> Conversion:
    """Resize converted EVAViT weights and describe them.

    Args:
        source: The source state dict (for the classifier head and the list
            of dropped keys).
        weights: EVAViT weights converted from ``source``.
        args: ``patch_size``, ``img_size`` ((height, width)) and
            ``classifier`` options (absent ones count as not given).

    Returns:
        The conversion, as a backbone or an ImageClassifier checkpoint.
    """
    if 'patch_embed.proj.weight' not in weights:
        raise CheckpointError(
            'The file has no patch_embed.proj.weight: not a full EVA-01 ViT '
            '(is it a checkpoint of another model part?).')
    patch_size = getattr(args, 'patch_size', None)
    img_size = getattr(args, 'img_size', None)
    before = {k: tuple(v.shape) for k, v in weights.items()}
    weights = resize_checkpoint(
        weights,
        patch_size=patch_size,
        img_size=img_size,
        num_extra_tokens=int('cls_token' in weights))
    info = describe_backbone(weights)
    report = [
        f'{info["num_layers"]} blocks, width {info["embed_dims"]}, '
        f'MLP {info["mlp_hidden_dim"]}, patch {info["patch_size"]}, '
        f'pos_embed grid {info["pos_embed_grid"]}'
    ]
    report += [
        f'resized {key}: {list(before[key])} -> {list(weights[key].shape)}'
        for key in sorted(before) if tuple(weights[key].shape) != before[key]
    ]
    dropped = sorted(set(source) - set(weights))
    if getattr(args, 'classifier', False):
        weights = to_image_classifier(weights, source)
        dropped = [key for key in dropped if not key.startswith('head.')]
        info['num_classes'] = int(weights['head.fc.weight'].shape[0])
        report.append(f'classifier head.fc: {info["num_classes"]} classes')
    return Conversion(weights, info, dropped, report)


def to_image_classifier(backbone: Mapping[str, torch.Tensor],
                        source: Mapping) -> StateDict:
    """Weights of an mmpretrain ``ImageClassifier`` with a linear head.

    Official EVA-01 and timm classifiers keep their linear classifier as
    ``head.weight`` / ``head.bias``, which the backbone converters drop;
    mmpretrain's ``LinearClsHead`` names it ``head.fc``. The backbone goes
    under ``backbone.``.

    Args:
        backbone: Converted (and possibly resized) EVAViT weights.
        source: The original checkpoint, wrapped or not, holding the head.

    Returns:
        The classifier state dict.

    Raises:
        CheckpointError: If the source has no linear ``head``.
    """
    weights = unwrap_state_dict(source)
    missing = [k for k in ('head.weight', 'head.bias') if k not in weights]
    if missing:
        raise CheckpointError(
            f'The checkpoint has no classifier ({missing} missing): convert '
            'it as a backbone, without --classifier.')
    classifier = {f'backbone.{key}': value for key, value in backbone.items()}
    classifier['head.fc.weight'] = weights['head.weight']
    classifier['head.fc.bias'] = weights['head.bias']
    return to_fp32(classifier)
