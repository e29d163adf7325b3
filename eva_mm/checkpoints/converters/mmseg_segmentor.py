"""EVA-01 semantic segmentation models: mmseg 0.x / mmcv 1.x -> mmseg 1.x.

The released ``eva_sem_seg_mask2former_*.pth`` files (baaivision/EVA,
EVA-01/seg) hold a ``BEiTAdapter`` backbone and a ``Mask2FormerHead`` built
from mmcv 1.x transformer layers. The backbone and the adapter are named as
:class:`~eva_mm.models.EVAViTAdapter` names them; only the head's
transformer layers differ, because mmcv 1.x ``BaseTransformerLayer`` keeps
its attentions and FFNs in lists ordered by ``operation_order`` while mmdet
3.x names them:

- pixel decoder (``operation_order=('self_attn', 'norm', 'ffn', 'norm')``,
  EVA-01 ``seg/configs/ade20k/eva_mask2former_896_20k_coco164k2ade20k_ms.py``):
  ``encoder.layers.L.attentions.0`` -> ``self_attn``, ``ffns.0`` -> ``ffn``;
- transformer decoder (``operation_order=('cross_attn', 'norm',
  'self_attn', 'norm', 'ffn', 'norm')``, same file): ``attentions.0`` ->
  ``cross_attn``, ``attentions.1`` -> ``self_attn``, ``ffns.0`` -> ``ffn``.

``norms.N`` keep their index (both toolboxes apply them in the same order),
and every other tensor keeps its name and value. The BEiT
``relative_position_index`` buffers of the rel-pos variant are derived from
the grid (``EVAAttention`` computes them), so they are dropped.
"""
import argparse
import re
from typing import Dict, List, Mapping, Tuple

import torch

from ..errors import CheckpointError
from ..registry import Conversion, register_src_format, src_format_hint
from ..state_dict import StateDict, absent_keys, require_keys, to_fp32

# (pattern, replacement) of the mmcv 1.x layer lists, in the order tried.
_HEAD_RENAMES: Tuple[Tuple[re.Pattern, str], ...] = (
    (re.compile(r'^(decode_head\.pixel_decoder\.encoder\.layers\.\d+\.)'
                r'attentions\.0\.'), r'\1self_attn.'),
    (re.compile(r'^(decode_head\.pixel_decoder\.encoder\.layers\.\d+\.)'
                r'ffns\.0\.'), r'\1ffn.'),
    (re.compile(r'^(decode_head\.transformer_decoder\.layers\.\d+\.)'
                r'attentions\.0\.'), r'\1cross_attn.'),
    (re.compile(r'^(decode_head\.transformer_decoder\.layers\.\d+\.)'
                r'attentions\.1\.'), r'\1self_attn.'),
    (re.compile(r'^(decode_head\.transformer_decoder\.layers\.\d+\.)'
                r'ffns\.0\.'), r'\1ffn.'),
)
# Names of the mmcv 1.x lists that no rule above covers (a third attention,
# a second FFN): another architecture, not loaded silently.
_MMCV1_LIST = re.compile(r'\.(attentions|ffns)\.\d+\.')
# Names that only mmseg 1.x / mmdet 3.x layers have.
_MMSEG1_NAME = re.compile(r'\.layers\.\d+\.(self_attn|cross_attn|ffn)\.')
_DERIVED = re.compile(r'^backbone\..*\.relative_position_index$')
_TOP_LEVEL = ('backbone.', 'decode_head.')
_DEC_LAYER = re.compile(r'^decode_head\.transformer_decoder\.layers\.(\d+)\.')
_BLOCK = re.compile(r'^backbone\.blocks\.(\d+)\.')

# Keys every official EVA-01 ViT-Adapter + Mask2Former file has.
_REQUIRED = ('backbone.patch_embed.proj.weight', 'backbone.spm.',
             'backbone.interactions.', 'decode_head.pixel_decoder.',
             'decode_head.transformer_decoder.',
             'decode_head.query_feat.weight', 'decode_head.cls_embed.weight')
_FORMAT = 'official-seg'


def _is_official_seg(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """The EVA-01 segmentor with the head's mmcv 1.x layer lists (eva_mm's
    has the mmseg 1.x names)."""
    return not absent_keys(state_dict, _REQUIRED) and any(
        _MMCV1_LIST.search(key) for key in state_dict
        if key.startswith('decode_head.'))


def _check_kind(source: StateDict) -> None:
    """One clear error for a file that is not an mmcv 1.x EVA segmentor."""
    if any(key in source
           for key in ('patch_embed.proj.weight', 'blocks.0.norm1.weight')):
        raise CheckpointError(
            'This is a bare EVA-01 ViT, not a segmentation model: convert it '
            f'with {src_format_hint("official")} (it initialises the backbone '
            'of a segmentation config through init_cfg).')
    require_keys(
        source, _REQUIRED, 'an EVA-01 ViT-Adapter + Mask2Former segmentation '
        'checkpoint (eva_sem_seg_mask2former_*.pth)',
        'Give one of the released EVA-01 segmentation files; detectors use '
        f'{src_format_hint("official-det")}, bare ViTs '
        f'{src_format_hint("official")}.')
    converted = sorted(k for k in source if _MMSEG1_NAME.search(k))
    if converted:
        raise CheckpointError(
            f'The head already has mmseg 1.x names ({converted[0]}, ...): '
            'this file is an eva_mm / mmseg 1.x checkpoint and loads as it '
            'is (tools/test.py CONFIG CHECKPOINT); it needs no conversion.')
    foreign = sorted(k for k in source if not k.startswith(_TOP_LEVEL))
    if foreign:
        raise CheckpointError(
            f'{len(foreign)} key(s) are outside backbone./decode_head., which '
            f'the EVA-01 segmentation model does not have: {foreign[:10]}. '
            'Is this another model (an auxiliary head, a detector)?')


def _rename(key: str) -> str:
    for pattern, replacement in _HEAD_RENAMES:
        renamed, count = pattern.subn(replacement, key)
        if count:
            return renamed
    if _MMCV1_LIST.search(key):
        raise CheckpointError(
            f'{key}: the EVA-01 Mask2Former has one deformable attention and '
            'one FFN per pixel-decoder layer and a cross- and a '
            'self-attention and one FFN per decoder layer; this layer has '
            'more, so it is not an EVA-01 segmentation checkpoint.')
    return key


def _describe(weights: StateDict) -> Dict[str, object]:
    blocks = {int(m.group(1)) for m in map(_BLOCK.match, weights) if m}
    layers = {int(m.group(1)) for m in map(_DEC_LAYER.match, weights) if m}
    return dict(
        embed_dims=int(weights['backbone.patch_embed.proj.weight'].shape[0]),
        num_layers=len(blocks),
        num_classes=int(weights['decode_head.cls_embed.weight'].shape[0]) - 1,
        num_queries=int(weights['decode_head.query_feat.weight'].shape[0]),
        num_decoder_layers=len(layers),
        rel_pos_bias=any(
            k.endswith('relative_position_bias_table') for k in weights),
        layer_scale=any(k.endswith('.gamma_1') for k in weights))


@register_src_format(
    _FORMAT, 'Released EVA-01 semantic segmentation models '
    '(eva_sem_seg_mask2former_*.pth: mmseg 0.x ViT-Adapter + Mask2Former '
    'with mmcv 1.x layer names) -> eva_mm Mask2Former segmentor.',
    recognise=_is_official_seg)
def official_seg(source: StateDict, args: argparse.Namespace) -> Conversion:
    """Rename the head's mmcv 1.x transformer layers (see module doc).

    Args:
        source: The official checkpoint's flat state dict.
        args: The tool's command line (no options of its own).

    Returns:
        The segmentor weights; every tensor but the dropped index buffers
        keeps its value.

    Raises:
        CheckpointError: For a file of another kind, with what to use.
    """
    _check_kind(source)
    weights: StateDict = {}
    dropped: List[str] = []
    renamed = 0
    for key, value in source.items():
        if _DERIVED.match(key):
            dropped.append(key)
            continue
        new_key = _rename(key)
        renamed += new_key != key
        weights[new_key] = value
    # Released files are fp32; a half-precision copy is cast so that the
    # model and its optimiser start in fp32.
    weights = to_fp32(weights)
    info = _describe(weights)
    report = [
        f'{info["num_layers"]} blocks of width {info["embed_dims"]}, '
        f'{info["num_decoder_layers"]} decoder layers, {info["num_queries"]} '
        f'queries, {info["num_classes"]} classes, rel-pos bias '
        f'{info["rel_pos_bias"]}, layer scale {info["layer_scale"]}',
        f'renamed {renamed} mmcv 1.x transformer-layer tensors to mmseg 1.x '
        'names (attentions.N/ffns.0 -> self_attn/cross_attn/ffn)'
    ]
    return Conversion(weights, info, sorted(dropped), report)
