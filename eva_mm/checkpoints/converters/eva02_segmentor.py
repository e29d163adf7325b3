"""The released EVA-02 segmentors: mmseg 0.x UperNet files.

``eva02_{B,L}_ade_seg_upernet_sz{512,640}.pth`` (EVA-02/seg/README.md) are
state dicts of mmseg 0.x's ``EncoderDecoder`` with the official ``EVA2``
backbone (EVA-02/seg/backbone/eva2.py, "eva2.py" below), ``UPerHead`` and
an ``FCNHead`` auxiliary head. Format ``official-eva02-seg`` writes the
segmentor of configs/segmentation/eva02-* (EVAViT + mmseg's
``Feature2Pyramid`` + the same heads), tensor for tensor:

- ``backbone.*`` of the ViT with the EVA-02 backbone mapping
  (eva02_backbone.py): separate ``q_proj``/``k_proj``/``v_proj`` fused into
  ``attn.qkv``, SwiGLU ``w1``/``w2``/``ffn_ln``/``w3`` as timm's
  ``fc1_g``/``fc1_x``/``norm``/``fc2``; ``cls_token`` and ``pos_embed``
  (with its cls position, for the training crop) unchanged;
- ``backbone.fpn1.{0,1,3}`` (deconvolution, SyncBN, deconvolution;
  eva2.py:609-615) -> ``neck.upsample_4x.{0,1,3}`` and ``backbone.fpn2.0``
  -> ``neck.upsample_2x.0``: mmseg's Feature2Pyramid builds the same
  layers in the same order (fpn3 and fpn4 have no parameters);
- ``decode_head.*`` and ``auxiliary_head.*`` unchanged: UPerHead and
  FCNHead keep their mmcv ``ConvModule`` names (``conv``, ``bn``) and
  ``conv_seg`` from mmseg 0.x to 1.x.

Dropped: the RoPE tables ``backbone.rope.freqs_cos/sin`` (persistent
buffers, also saved under every ``blocks.N.attn.rope.``; eva2.py:145-146,
579-585), which EVAViT computes. Any other key is an error.
"""
import argparse
import re
from typing import Dict, List, Mapping

import torch
from ..errors import CheckpointError
from ..registry import Conversion, register_src_format, src_format_hint
from ..state_dict import StateDict, absent_keys, require_keys, to_fp32
from .eva02_backbone import convert_eva02_keys

# eva2.py's fpn1/fpn2 -> Feature2Pyramid's upsample_4x/upsample_2x.
_NECK = re.compile(r'^backbone\.fpn([12])\.(\d+)\.(.+)$')
_NECK_NAMES = {'1': 'upsample_4x', '2': 'upsample_2x'}
_HEADS = ('decode_head.', 'auxiliary_head.')
_REQUIRED = ('backbone.blocks.0.mlp.w1.weight', 'backbone.fpn1.0.weight',
             'decode_head.fpn_bottleneck.conv.weight')


def _is_official_eva02_seg(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """The official SwiGLU names and eva2.py's fpn1 (eva_mm's UperNet has
    timm's names and Feature2Pyramid)."""
    return not absent_keys(state_dict, _REQUIRED)


@register_src_format(
    'official-eva02-seg',
    'Released EVA-02 ADE20K segmentors (eva02_{B,L}_ade_seg_upernet_*.pth: '
    'mmseg 0.x EVA2 + UperNet) -> the eva_mm UperNet of '
    'configs/segmentation/eva02-*.',
    recognise=_is_official_eva02_seg)
def official_eva02_seg(source: StateDict,
                       args: argparse.Namespace) -> Conversion:
    """An official EVA-02 UperNet segmentor (see the module doc).

    Args:
        source: The flat source state dict.
        args: The tool's options (none of its own).

    Returns:
        The conversion, named as the eva_mm segmentor.

    Raises:
        CheckpointError: For a file of another kind or keys without a
            counterpart.
    """
    require_keys(
        source, _REQUIRED,
        'an EVA-02 UperNet segmentor (eva02_*_ade_seg_upernet_*.pth)',
        'EVA-01 Mask2Former segmentors use '
        f'{src_format_hint("official-seg")}, EVA-02 backbones '
        f'{src_format_hint("official-eva02")}.')
    vit: StateDict = {}
    weights: StateDict = {}
    unknown: List[str] = []
    for key, value in source.items():
        neck = _NECK.match(key)
        if neck:
            name = _NECK_NAMES[neck[1]]
            weights[f'neck.{name}.{neck[2]}.{neck[3]}'] = value
        elif key.startswith('backbone.'):
            vit[key[len('backbone.'):]] = value
        elif key.startswith(_HEADS):
            weights[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f'{len(unknown)} key(s) of the segmentor have no counterpart in '
            f'the eva_mm model: {sorted(unknown)[:20]}.')
    backbone, dropped = convert_eva02_keys(vit)
    weights = to_fp32(weights)
    weights.update({'backbone.' + k: v for k, v in backbone.items()})
    meta: Dict[str, object] = dict(
        num_classes=int(source['decode_head.conv_seg.weight'].shape[0]),
        with_auxiliary_head=any(
            key.startswith('auxiliary_head.') for key in source),
        num_layers=len({
            key.split('.')[1]
            for key in backbone if key.startswith('blocks.')
        }))
    report = [
        f'{meta["num_layers"]} blocks, {meta["num_classes"]} classes; '
        f'q/k/v fused, SwiGLU renamed, fpn1/fpn2 -> Feature2Pyramid; '
        f'{len(dropped)} RoPE tables dropped (EVAViT computes them)'
    ]
    return Conversion(weights, meta, ['backbone.' + k for k in dropped],
                      report)
