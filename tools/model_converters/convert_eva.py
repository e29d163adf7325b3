"""Convert official BAAI EVA-01 or timm ``eva_*`` weights for eva_mm.

The output, ``{'state_dict': ..., 'meta': ...}`` of plain tensors, loads into
``EVAViT`` with ``mmengine.runner.load_checkpoint`` or as
``init_cfg=dict(type='Pretrained', checkpoint=DST)``. Example, the EVA-01
giant MIM weights at patch 16 for 1024x1024 detection::

    python tools/model_converters/convert_eva.py --src-format official \\
        eva_psz14.pt eva_psz14to16_1024.pth --patch-size 16 --img-size 1024

``--classifier`` keeps the linear classifier of a fine-tuned model and writes
an mmpretrain ``ImageClassifier`` checkpoint (``backbone.*``, ``head.fc.*``)
for ``load_from`` or ``tools/test.py``.
"""
import argparse
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

# Run from a checkout without installing eva_mm: the repository root holds
# the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eva_mm.models.utils.checkpoint import (  # noqa: E402
    CheckpointError, convert_official_eva, convert_timm_eva,
    load_state_dict_file, resize_checkpoint, to_image_classifier)

CONVERTERS = {'official': convert_official_eva, 'timm': convert_timm_eva}


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'{text} is not a positive size')
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads sys.argv.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description='Convert EVA-01 weights to an eva_mm EVAViT checkpoint.')
    parser.add_argument(
        '--src-format',
        required=True,
        choices=sorted(CONVERTERS),
        help="'official': BAAI EVA-01 files (weights under 'model' or "
        "'module', fp16 allowed); 'timm': timm eva_* state dicts.")
    parser.add_argument(
        'src', help='Source checkpoint (.pth/.pt/.bin/.safetensors).')
    parser.add_argument('dst', help='Output checkpoint (.pth).')
    parser.add_argument(
        '--patch-size',
        type=_positive_int,
        help='Resize the patch kernel to this size (bicubic), e.g. 16 to run '
        'the patch-14 giant at patch 16 as the EVA dense tasks do.')
    parser.add_argument(
        '--img-size',
        type=_positive_int,
        nargs='+',
        metavar='SIZE',
        help='Resize the position embedding to the grid of this image size '
        '(one value, or height and width).')
    parser.add_argument(
        '--classifier',
        action='store_true',
        help="Keep the linear classifier 'head' and write an mmpretrain "
        'ImageClassifier checkpoint (backbone.*, head.fc.*).')
    args = parser.parse_args(argv)
    if args.img_size is not None and len(args.img_size) > 2:
        parser.error('--img-size takes one value or two (height width).')
    return args


def _grid(state_dict: Dict[str, torch.Tensor]) -> Optional[int]:
    pos_embed = state_dict.get('pos_embed')
    if pos_embed is None:
        return None
    num_patches = pos_embed.shape[1] - int('cls_token' in state_dict)
    side = math.isqrt(num_patches)
    return side if side * side == num_patches else None


def _describe(state_dict: Dict[str, torch.Tensor]) -> Dict[str, object]:
    blocks = {
        int(key.split('.')[1])
        for key in state_dict if key.startswith('blocks.')
    }
    kernel = state_dict['patch_embed.proj.weight']
    fc1 = state_dict.get('blocks.0.mlp.fc1.weight')
    return dict(
        embed_dims=int(kernel.shape[0]),
        num_layers=len(blocks),
        mlp_hidden_dim=None if fc1 is None else int(fc1.shape[0]),
        patch_size=int(kernel.shape[-1]),
        pos_embed_grid=_grid(state_dict),
        with_cls_token='cls_token' in state_dict,
        num_params=sum(v.numel() for v in state_dict.values()))


def convert(src: str,
            dst: str,
            src_format: str,
            patch_size: Optional[int] = None,
            img_size: Optional[List[int]] = None,
            classifier: bool = False) -> None:
    """Convert ``src`` to an eva_mm checkpoint at ``dst``.

    Args:
        src: Source checkpoint file.
        dst: Output file.
        src_format: ``'official'`` or ``'timm'``.
        patch_size: Target patch size, or ``None`` to keep it.
        img_size: Target image size (one or two values), or ``None`` to keep
            the position grid.
        classifier: Keep the classifier head and write ImageClassifier
            weights.
    """
    source = load_state_dict_file(src)
    weights = CONVERTERS[src_format](source)
    if 'patch_embed.proj.weight' not in weights:
        raise CheckpointError(
            f'{src!r} has no patch_embed.proj.weight: not a full EVA-01 ViT '
            '(is it a checkpoint of another model part?).')
    before = {k: tuple(v.shape) for k, v in weights.items()}
    weights = resize_checkpoint(
        weights,
        patch_size=patch_size,
        # One value is a square image, two are (height, width).
        img_size=None if img_size is None else (img_size[0], img_size[-1]),
        num_extra_tokens=int('cls_token' in weights))
    # Fresh storages: a view (DeepSpeed keeps parameters in flat buffers)
    # would otherwise save the whole buffer it looks into.
    weights = {
        key: value.clone(memory_format=torch.contiguous_format)
        for key, value in weights.items()
    }
    info = _describe(weights)
    meta = dict(
        converted_by='eva_mm tools/model_converters/convert_eva.py',
        src=os.path.basename(src),
        src_format=src_format,
        **info)
    dropped = sorted(set(source) - set(weights))
    if classifier:
        weights = to_image_classifier(weights, source)
        dropped = [key for key in dropped if not key.startswith('head.')]
        meta['num_classes'] = int(weights['head.fc.weight'].shape[0])
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': weights, 'meta': meta}, dst)

    lines = [
        f'Converted {src} ({src_format}) -> {dst}',
        f'  {len(weights)} tensors, {info["num_params"]:,} parameters; '
        f'{info["num_layers"]} blocks, width {info["embed_dims"]}, '
        f'MLP {info["mlp_hidden_dim"]}, patch {info["patch_size"]}, '
        f'pos_embed grid {info["pos_embed_grid"]}',
    ]
    prefix = 'backbone.' if classifier else ''
    lines += [
        f'  resized {key}: {list(before[key])} -> '
        f'{list(weights[prefix + key].shape)}' for key in sorted(before)
        if tuple(weights[prefix + key].shape) != before[key]
    ]
    if classifier:
        lines.append(f'  classifier head.fc: {meta["num_classes"]} classes')
    if dropped:
        lines.append(f'  dropped {len(dropped)} key(s) not used by the '
                     f'backbone: {", ".join(dropped)}')
    print('\n'.join(lines))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads sys.argv.
    """
    args = parse_args(argv)
    try:
        convert(args.src, args.dst, args.src_format, args.patch_size,
                args.img_size, args.classifier)
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        raise SystemExit(f'convert_eva.py: error: {err}') from err


if __name__ == '__main__':
    main()
