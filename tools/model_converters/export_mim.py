"""Export an EVA MIM pre-training checkpoint as an EVAViT backbone checkpoint.

Reads what ``tools/train.py`` saved for an ``eva_mm.EVAMIM`` model, a plain
Runner ``iter_N.pth``/``epoch_N.pth`` file or a DeepSpeed checkpoint folder
(``iter_N.pth/mp_rank_00_model_states.pt``, bf16/fp16 weights), and writes
``{'state_dict': ..., 'meta': ...}`` with the student's weights in fp32 under
EVAViT's own names: cls token and position embedding kept, the MIM head and
the mask token dropped (the teacher was never saved). Detection,
segmentation, video and classification configs load the result with
``init_cfg=dict(type='Pretrained', checkpoint=DST)``.

``--patch-size 16`` resizes the patch-14 kernel for the patch-16 downstream
models, as the official EVA ``interpolate_patch_14to16`` script does;
``--img-size`` resizes the position grid to ``img_size // patch_size``::

    python tools/model_converters/export_mim.py \\
        work_dirs/eva-mim_vit-giant/epoch_150.pth eva_mim_psz14to16.pth \\
        --patch-size 16 --img-size 224
"""
import argparse
import os
import sys
from pathlib import Path
from typing import Optional


# Run from a checkout without installing eva_mm.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eva_mm.engine.safe_checkpoint import (  # noqa: E402
    register_mmengine_safe_globals)
from eva_mm.checkpoints.converters import (  # noqa: E402
    Conversion, save_converted)
from eva_mm.checkpoints.errors import CheckpointError  # noqa: E402
from eva_mm.checkpoints.reading import load_state_dict_file  # noqa: E402
from eva_mm.checkpoints.resizing import resize_checkpoint  # noqa: E402
from eva_mm.checkpoints.state_dict import (  # noqa: E402
    StateDict, rename_prefix, to_fp32)

# Checkpoints written by mmengine's runner hold more than tensors.
register_mmengine_safe_globals()

# DeepSpeed writes the model of model-parallel rank 0 here, whatever ZeRO
# stage 1/2 partitioned (the optimizer state only).
DEEPSPEED_MODEL_FILE = 'mp_rank_00_model_states.pt'


def weights_file(src: str) -> str:
    """The file holding the model weights of a checkpoint path."""
    if os.path.isdir(src):
        path = os.path.join(src, DEEPSPEED_MODEL_FILE)
        if not os.path.isfile(path):
            raise CheckpointError(
                f'{src} is a folder without {DEEPSPEED_MODEL_FILE}: give a '
                'DeepSpeed checkpoint folder (iter_N.pth/) or a .pth file. '
                'ZeRO-3 folders need zero_to_fp32.py first.')
        return path
    return src


def export_backbone(state_dict: StateDict,
                    keep_mask_token: bool = False) -> StateDict:
    """The student backbone's weights of an EVAMIM state dict, in fp32.

    Args:
        state_dict: Weights with the model's ``backbone.``/``head.`` names.
        keep_mask_token: Keep ``mask_token`` (to continue MIM training).

    Returns:
        EVAViT weights without the prefix.

    Raises:
        CheckpointError: If there are no ``backbone.`` weights.
    """
    backbone = to_fp32(rename_prefix(state_dict, 'backbone.'))
    if not backbone:
        raise CheckpointError(
            'No backbone.* weights: this is not an EVAMIM checkpoint (keys '
            f'start with {sorted({k.split(".")[0] for k in state_dict})}).')
    if not keep_mask_token:
        backbone.pop('mask_token', None)
    return backbone


def export(src: str,
           dst: str,
           patch_size: Optional[int] = None,
           img_size: Optional[int] = None,
           keep_mask_token: bool = False) -> StateDict:
    """Read ``src``, export and resize the backbone, write ``dst``.

    Returns:
        The written backbone weights.
    """
    backbone = export_backbone(
        load_state_dict_file(weights_file(src)), keep_mask_token)
    backbone = resize_checkpoint(backbone, patch_size, img_size)
    save_converted(
        Conversion(backbone),
        dst,
        src,
        'eva_mm-mim',
        converted_by='tools/model_converters/export_mim.py')
    return backbone


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export an EVA MIM checkpoint as a backbone checkpoint')
    parser.add_argument('src', help='iter_N.pth / epoch_N.pth file or folder')
    parser.add_argument('dst', help='output .pth file')
    parser.add_argument(
        '--patch-size', type=int, help='resize the patch kernel, e.g. 16')
    parser.add_argument(
        '--img-size', type=int, help='resize the position grid for this size')
    parser.add_argument(
        '--keep-mask-token',
        action='store_true',
        help='keep mask_token (to go on with MIM pre-training)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        backbone = export(args.src, args.dst, args.patch_size, args.img_size,
                          args.keep_mask_token)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        sys.exit(f'export_mim.py: {err}')
    params = sum(v.numel() for v in backbone.values())
    print(f'Wrote {len(backbone)} tensors ({params / 1e6:.2f}M parameters) '
          f'to {args.dst}')


if __name__ == '__main__':
    main()
