"""EVAViT weights to and from open_clip's EVA CLIP models.

``export`` writes the state dict of a whole open_clip EVA CLIP model whose
vision tower (``visual.trunk``) holds an EVAViT checkpoint (the MIM export of
``export_mim.py`` or an EVA-01 checkpoint converted by ``convert_eva.py``);
the text tower and the image projection are open_clip's initialisation (or,
with ``--text-checkpoint``, the text tower of another CLIP, as the paper
starts from OpenAI CLIP-L's). ``open_clip.create_model(MODEL,
pretrained=DST)`` and open_clip's training (``--pretrained DST``) load it
strictly::

    python tools/model_converters/eva_clip.py export eva_mim_g14.pth \\
        eva_clip_init.pth --model EVA01-g-14 --text-checkpoint clip_l.pth

``import`` takes the tower of an open_clip EVA CLIP checkpoint back out as an
EVAViT checkpoint for the detection, segmentation, video and classification
configs (``init_cfg=dict(type='Pretrained', checkpoint=DST)``); the image
projection is kept under ``head.``, which EVAViT loading ignores::

    python tools/model_converters/eva_clip.py import \\
        logs/eva-clip/checkpoints/epoch_latest.pt eva_clip_g14_vision.pth

The BAAI release ``eva_clip_psz14.pt`` (BEiT names ``visual.blocks.*``,
``visual.head``, ``text.*``) is not an open_clip checkpoint; convert it with
``convert_eva.py --src-format official-clip`` (add ``--vision-only`` for the
EVAViT tower).

``--teacher TEACHER.pth`` also writes the tower as open_clip's plain
``VisionTransformer`` with its model config in ``meta['model_cfg']``, the
form the MIM teacher ``eva_mm.OpenCLIPTeacher(model_cfg=...,
pretrained=TEACHER.pth)`` runs (see docs/clip.md).

``--model-config cfg.json`` registers a custom open_clip config (its file
name is the model name), e.g. a small EVA whose ``timm_model_name`` was
registered in timm by the calling code.
"""
import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

# Run from a checkout without installing eva_mm.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eva_mm.engine.safe_checkpoint import (  # noqa: E402
    register_mmengine_safe_globals)
from eva_mm.checkpoints.converters import (  # noqa: E402
    Conversion, save_converted)
from eva_mm.checkpoints.errors import CheckpointError  # noqa: E402
from eva_mm.checkpoints.open_clip_convert import (  # noqa: E402
    copy_text_tower, eva_vit_to_open_clip, open_clip_to_eva_vit,
    to_open_clip_vision_transformer)
from eva_mm.checkpoints.reading import load_state_dict_file  # noqa: E402
from eva_mm.checkpoints.resizing import resize_checkpoint  # noqa: E402
from eva_mm.checkpoints.state_dict import (  # noqa: E402
    StateDict, select_prefix)

# Checkpoints written by mmengine's runner hold more than tensors.
register_mmengine_safe_globals()

CONVERTER = 'tools/model_converters/eva_clip.py'


def export(src: str,
           dst: str,
           model: str = 'EVA01-g-14',
           model_config: Optional[str] = None,
           text_checkpoint: Optional[str] = None,
           prefix: Optional[str] = None,
           seed: int = 0) -> List[str]:
    """Write the open_clip checkpoint of ``model`` with ``src`` as its tower.

    Args:
        src: An EVAViT checkpoint file.
        dst: The output file, loadable by ``create_model(model,
            pretrained=dst)``.
        model: The open_clip model name.
        model_config: A JSON config file to register first (its stem is the
            model name).
        text_checkpoint: An open_clip checkpoint whose text tower
            initialises the model's.
        prefix: Take the backbone from the keys with this prefix (e.g.
            ``'backbone.'`` of an mmpretrain classifier).
        seed: Seed of the fresh open_clip initialisation (text tower,
            projection, ``logit_scale``), so that exports are reproducible.

    Returns:
        The text keys kept at their initialisation (with
        ``text_checkpoint``).
    """
    import open_clip
    if model_config is not None:
        open_clip.add_model_config(model_config)
    backbone = load_state_dict_file(src)
    if prefix:
        backbone = select_prefix(backbone, prefix, src)
    torch.manual_seed(seed)
    clip = open_clip.create_model(model, pretrained=None)
    state = eva_vit_to_open_clip(backbone, clip.state_dict())
    kept: List[str] = []
    if text_checkpoint is not None:
        state, kept = copy_text_tower(state,
                                      load_state_dict_file(text_checkpoint))
    # open_clip unwraps 'state_dict'; the rest stays readable with
    # weights_only.
    save_converted(
        Conversion(
            state,
            meta=dict(
                model=model,
                text_source=None if text_checkpoint is None else
                os.path.basename(text_checkpoint),
                text_kept=kept)),
        dst,
        src,
        'eva_mm',
        converted_by=CONVERTER)
    return kept


def import_tower(src: str,
                 dst: str,
                 patch_size: Optional[int] = None,
                 img_size: Optional[int] = None,
                 teacher: Optional[str] = None,
                 num_heads: int = 16) -> StateDict:
    """Write the EVAViT checkpoint of the tower of an open_clip checkpoint.

    Args:
        src: An open_clip EVA CLIP checkpoint (e.g. open_clip training's
            ``epoch_N.pt``) or the tower alone.
        dst: The output EVAViT checkpoint; the projection is under
            ``head.``.
        patch_size: Resize the patch kernel (16 for ViTDet-style models).
        img_size: Resize the position grid for this input size.
        teacher: Also write the MIM teacher form of the tower here (at the
            tower's own size).
        num_heads: Attention heads, for the teacher's config.

    Returns:
        The written weights.
    """
    backbone, projection = open_clip_to_eva_vit(load_state_dict_file(src))
    if teacher is not None:
        model_cfg, tower = to_open_clip_vision_transformer(
            backbone, projection, num_heads)
        save_converted(
            Conversion(tower, meta=dict(model_cfg=model_cfg)),
            teacher,
            src,
            'open_clip',
            converted_by=CONVERTER)
        print(f'Teacher: OpenCLIPTeacher(model_cfg={model_cfg!r}, '
              f'pretrained={teacher!r})')
    backbone = resize_checkpoint(backbone, patch_size, img_size)
    weights = dict(backbone)
    weights.update(
        {f'head.{name}': value
         for name, value in projection.items()})
    save_converted(
        Conversion(weights), dst, src, 'open_clip', converted_by=CONVERTER)
    return weights


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads sys.argv.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description='EVAViT weights to and from open_clip EVA CLIP models.')
    commands = parser.add_subparsers(dest='command', required=True)
    exporter = commands.add_parser(
        'export', help='EVAViT checkpoint -> open_clip EVA CLIP checkpoint')
    exporter.add_argument('src', help='EVAViT checkpoint')
    exporter.add_argument('dst', help='output open_clip checkpoint')
    exporter.add_argument(
        '--model', default='EVA01-g-14', help='open_clip model name')
    exporter.add_argument(
        '--model-config', help='custom open_clip JSON config to register')
    exporter.add_argument(
        '--text-checkpoint',
        help='open_clip checkpoint whose text tower initialises the text '
        'tower (OpenAI CLIP-L in the paper)')
    exporter.add_argument(
        '--prefix', help="backbone key prefix in SRC, e.g. 'backbone.'")
    exporter.add_argument(
        '--seed', type=int, default=0, help='seed of the fresh weights')
    importer = commands.add_parser(
        'import', help='open_clip EVA CLIP checkpoint -> EVAViT checkpoint')
    importer.add_argument('src', help='open_clip checkpoint')
    importer.add_argument('dst', help='output EVAViT checkpoint')
    importer.add_argument(
        '--patch-size', type=int, help='resize the patch kernel, e.g. 16')
    importer.add_argument(
        '--img-size', type=int, help='resize the position grid for this size')
    importer.add_argument(
        '--teacher',
        help='also write the tower for eva_mm.OpenCLIPTeacher (MIM) here')
    importer.add_argument(
        '--num-heads',
        type=int,
        default=16,
        help='attention heads of the tower, for --teacher (EVA-g: 16)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the command line."""
    args = parse_args(argv)
    try:
        if args.command == 'export':
            kept = export(args.src, args.dst, args.model, args.model_config,
                          args.text_checkpoint, args.prefix, args.seed)
            print(f'Wrote the {args.model} checkpoint to {args.dst}; load it '
                  f'with open_clip.create_model({args.model!r}, '
                  f'pretrained={args.dst!r}).')
            if kept:
                print(f'Text weights left at their initialisation: {kept}')
        else:
            weights = import_tower(args.src, args.dst, args.patch_size,
                                   args.img_size, args.teacher,
                                   args.num_heads)
            print(f'Wrote {len(weights)} tensors to {args.dst}.')
    except (CheckpointError, FileNotFoundError, ValueError,
            RuntimeError) as err:
        sys.exit(f'eva_clip.py: {err}')


if __name__ == '__main__':
    main()
