"""The released EVA-02 detectors: detectron2 Cascade (Mask) R-CNN files.

``eva02_{B,L}_{coco,lvis}_{bsl,sys}.pth``, ``eva02_L_*_to_o365.pth``,
``eva02_L_coco_{det,seg}_sys_o365.pth`` and ``eva02_L_lvis_sys_o365.pth``
(EVA-02/det/README.md) are state dicts (under ``'model'``) of detectron2's
``GeneralizedRCNN`` with the official EVA-02 ViT (EVA-02/det/detectron2/
modeling/backbone/vit.py, "vit.py" below) in ViTDet's
``SimpleFeaturePyramid``, ``StandardRPNHead`` and ``CascadeROIHeads``: the
EVA-01 detector layout (``official-det``, detectron2_detector.py) except
for the ViT. Format ``official-eva02-det`` renames the ViT with the
EVA-02 backbone mapping (eva02_backbone.py: separate ``q_proj``/
``k_proj``/``v_proj`` fused into ``attn.qkv``, SwiGLU ``w1``/``w2``/
``ffn_ln``/``w3`` as timm's ``fc1_g``/``fc1_x``/``norm``/``fc2``) and the
rest exactly as ``official-det``: the 224 px ``pos_embed`` (14 x 14 + cls,
vit.py:358-362) resized bicubically to the training grid, the pyramid,
RPN and cascade heads renamed, tensors unchanged.

Dropped: the RoPE tables, persistent buffers that vit.py computes from the
sizes (``backbone.net.rope_win.*``, ``backbone.net.rope_glb.*``, and the
same modules again under every ``blocks.N.attn.rope.``, vit.py:370-379,
395; EVAViT computes them), plus what ``official-det`` drops.
"""
import argparse
import re
from typing import Mapping

import torch

from ..errors import CheckpointError
from ..registry import Conversion, register_src_format, src_format_hint
from ..state_dict import StateDict, absent_keys
from .detectron2_detector import add_detector_arguments, convert_detector
from .eva02_backbone import convert_eva02_keys

_BACKBONE = 'backbone.net.'
# vit.py's two shared rotary embeddings, saved at the ViT level.
_ROPE = re.compile(r'^rope_(win|glb)\.freqs_(cos|sin)$')
# An EVA-02 ViT block (SwiGLU, separate q/k/v); EVA-01 has mlp.fc1 and qkv.
_EVA02_BLOCK = (_BACKBONE + 'blocks.0.mlp.w1.weight',
                _BACKBONE + 'blocks.0.attn.q_proj.weight')
_REQUIRED = (*_EVA02_BLOCK, 'backbone.simfp_2.0.weight')


def _is_official_eva02_det(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """An EVA-02 ViT block (SwiGLU ``w1``, separate ``q_proj``) under
    detectron2's ``backbone.net.``, and the pyramid."""
    return not absent_keys(state_dict, _REQUIRED)


@register_src_format(
    'official-eva02-det',
    'Released EVA-02 detectron2 detectors (eva02_{B,L}_{coco,lvis}_*.pth, '
    "eva02_L_*_o365*.pth, weights under 'model') -> the eva_mm Cascade "
    '(Mask) R-CNN of configs/detection/eva02-* (needs --config or '
    '--img-size).', add_detector_arguments, recognise=_is_official_eva02_det)
def official_eva02_det(source: StateDict,
                       args: argparse.Namespace) -> Conversion:
    """Rename the EVA-02 ViT of a detector, then convert it as EVA-01's.

    Args:
        source: The flat state dict of the detectron2 file.
        args: The tool's ``--config``, ``--img-size`` and
            ``--rel-pos-resize``.

    Returns:
        The eva_mm detector's weights; the RoPE tables listed as dropped.

    Raises:
        CheckpointError: For an EVA-01 detector, a backbone or segmentor
            file, or keys the eva_mm detector has no place for.
    """
    if not _is_official_eva02_det(source):
        kind = (f'an EVA-01 detector: use {src_format_hint("official-det")}'
                if _BACKBONE + 'blocks.0.attn.qkv.weight' in source else
                'a detectron2 detector' if any(
                    key.startswith(_BACKBONE) for key in source) else
                'no detectron2 detector (a backbone: '
                f'{src_format_hint("official-eva02")}; an EVA-02 segmentor: '
                f'{src_format_hint("official-eva02-seg")})')
        missing = absent_keys(source, _REQUIRED)
        raise CheckpointError(
            'This is not an EVA-02 detectron2 detector (eva02_*_coco_*.pth, '
            f'eva02_*_lvis_*.pth, eva02_L_*o365*.pth): it lacks {missing}, '
            f'{kind}.')
    vit = {
        key[len(_BACKBONE):]: value
        for key, value in source.items() if key.startswith(_BACKBONE)
    }
    rope = sorted(_BACKBONE + key for key in vit if _ROPE.match(key))
    weights, dropped = convert_eva02_keys(
        {key: value for key, value in vit.items() if not _ROPE.match(key)})
    renamed = {
        key: value
        for key, value in source.items() if not key.startswith(_BACKBONE)
    }
    renamed.update(
        {_BACKBONE + key: value for key, value in weights.items()})
    conversion = convert_detector(
        renamed, args, dropped=rope + [_BACKBONE + key for key in dropped])
    conversion.report.append(
        f'EVA-02 ViT: q/k/v fused, SwiGLU renamed; {len(rope) + len(dropped)}'
        ' RoPE tables dropped (EVAViT computes them)')
    return conversion
