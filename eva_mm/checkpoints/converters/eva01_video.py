"""Official EVA-01 video checkpoints -> mmaction2 ``Recognizer3D`` weights.

The released video models (``eva_video_k722.pth``, ``eva_video_k400.pth``,
``_k600``, ``_k700``) are state dicts of the official ``VisionTransformer``
of ``EVA-01/video/models/beit.py:392-540`` (built by
``models/clip_mae.py:222-228``: EVA-g/14, mean pooling), saved under
``'model'`` by ``utils/tools.py:49-57`` (``epoch_saving``'s
``save_state``):

- ``cls_token`` (1, 1, C); ``pos_embed`` (1, 1 + T*H'*W', C), one position
  per token of the (T, H', W') grid in that order, T = 8 for K-722 and 16
  for K-400/600/700 (``beit.py:418-425``);
- ``patch_embed.proj`` a Conv3d of kernel (1, 14, 14) (``PatchEmbed3D``,
  ``beit.py:274-305``);
- ``blocks.N.{norm1, attn.{q_bias, v_bias, qkv.weight, proj}, norm2,
  mlp.{fc1, fc2}}``;
- ``fc_norm`` (``norm`` is an Identity under mean pooling, no weights);
- ``head`` (K, C), the linear classifier.

The backbone names are :class:`EVAViT`'s (``num_frames=T``,
``temporal_pos_embed=True``, ``out_type='avg_featmap'``,
``use_fc_norm=True``, ``final_norm=False``), so the backbone goes under
``backbone.`` unchanged and ``head`` becomes mmaction2's ``cls_head.fc_cls``.
Every tensor is kept as it is (fp16 files are cast to fp32): the K-722 file
loads strictly into ``configs/video/eva-g-p14_k722-intermediate-ft_8x224.py``
and the K-400/600/700 files into the matching 16-frame configs.
"""
import argparse
from typing import Mapping

import torch

from ..errors import CheckpointError
from ..registry import Conversion, register_src_format, src_format_hint
from ..state_dict import StateDict, absent_keys, require_keys, to_fp32
from ..eva01 import convert_official_eva

HEAD = 'cls_head.fc_cls.'
BACKBONE = 'backbone.'
# Keys every official video file has (see the module doc).
_REQUIRED = ('patch_embed.proj.weight', 'pos_embed', 'cls_token', 'blocks.',
             'fc_norm.weight', 'head.weight', 'head.bias')


def _is_official_video(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Unprefixed video ViT names with the Conv3d patch kernel and the head
    (eva_mm's recognizers keep them under ``backbone.`` and ``cls_head.``).
    """
    return not absent_keys(state_dict, _REQUIRED) and \
        state_dict['patch_embed.proj.weight'].dim() == 5


@register_src_format(
    'official-video',
    'BAAI EVA-01 video files (eva_video_k722/k400/k600/k700.pth: the video '
    "ViT with its 'head') -> mmaction2 Recognizer3D (backbone.*, "
    'cls_head.fc_cls.*).',
    recognise=_is_official_video)
def official_video(source: StateDict, args: argparse.Namespace) -> Conversion:
    """Convert an official EVA-01 video checkpoint (see module doc).

    Args:
        source: The loaded file, unwrapped.
        args: The tool's command line (no options of its own).

    Returns:
        The recognizer weights.

    Raises:
        CheckpointError: For a file of another kind: an image EVA-01 file
            (2-D patch kernel), a file without the video head, or one with
            names that the official video model does not have.
    """
    require_keys(
        source, _REQUIRED,
        'an official EVA-01 video checkpoint (eva_video_k*.pth)',
        'An image EVA-01 file converts with '
        f'{src_format_hint("official", "timm")} (the video configs inflate '
        'it on load); a checkpoint that eva_mm wrote needs no conversion.')
    kernel = source['patch_embed.proj.weight']
    if kernel.dim() != 5:
        raise CheckpointError(
            'This is not an official EVA-01 video checkpoint: its patch '
            f'kernel has shape {list(kernel.shape)}, not the (C, 3, t, p, p) '
            'Conv3d of the video model. An image EVA-01 file converts with '
            f'{src_format_hint("official", "timm")}; the video configs '
            'inflate it on load.')
    backbone = convert_official_eva({
        k: v
        for k, v in source.items() if not k.startswith('head.')
    })
    head = to_fp32({
        HEAD + 'weight': source['head.weight'],
        HEAD + 'bias': source['head.bias'],
    })
    weights = {BACKBONE + k: v for k, v in backbone.items()}
    weights.update(head)
    # convert_official_eva drops derived buffers and a MIM lm_head, which
    # the video model has neither of; list them if a file holds them.
    kept = set(backbone) | {'head.weight', 'head.bias'}
    dropped = sorted(set(source) - kept)

    embed_dims, _, tubelet, patch, _ = kernel.shape
    num_classes = int(source['head.weight'].shape[0])
    blocks = {
        int(k.split('.')[1])
        for k in backbone if k.startswith('blocks.')
    }
    tokens = int(source['pos_embed'].shape[1]) - 1
    meta = dict(embed_dims=int(embed_dims),
                num_layers=len(blocks),
                patch_size=int(patch),
                tubelet_size=int(tubelet),
                pos_embed_tokens=tokens,
                num_classes=num_classes)
    # At 224 px and patch 14: 256 tokens per frame, 8 or 16 frames.
    report = [
        f'{len(blocks)} blocks, width {embed_dims}, patch {patch}, tubelet '
        f'{tubelet}, {tokens} position tokens (+ cls), {num_classes} classes'
    ]
    return Conversion(weights, meta, dropped, report)
