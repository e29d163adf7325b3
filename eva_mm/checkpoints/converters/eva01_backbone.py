"""EVA-01 ViT weights: the official BAAI files and timm ``eva_*`` models.

Both keep the EVA-01 parameter names, which are :class:`EVAViT`'s; the
result is a backbone checkpoint (or, with ``--classifier``, an mmpretrain
``ImageClassifier``), optionally with the patch kernel and the position
embedding resized for another patch or image size.

The two layouts differ only in what one of them cannot hold: the MIM parts
of the official pre-training files (``lm_head``, ``mask_token``,
EVA-01/eva/modeling_pretrain.py:38-72) and their BEiT index buffers, which
timm's models never save, and timm's zero ``k_bias`` (saved by timm before
0.9), which the official code never has. A fine-tuned classifier or a bare
ViT is in both layouts; both formats then recognise it (and convert it to
the same weights).
"""
import argparse
import re
from typing import Mapping

import torch

from ..eva01 import (DERIVED_KEY, TIMM_K_BIAS, convert_official_eva,
                     convert_timm_eva, is_eva01_vit)
from ..registry import Conversion, register_src_format
from ..state_dict import StateDict
from .backbone import add_backbone_arguments, backbone_conversion

_MIM_PART = re.compile(r'^(lm_head\.|mask_token$)')


def _is_official(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return is_eva01_vit(state_dict) and not any(
        TIMM_K_BIAS.search(key) for key in state_dict)


def _is_timm(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return is_eva01_vit(state_dict) and not any(
        _MIM_PART.match(key) or DERIVED_KEY.search(key)
        for key in state_dict)


@register_src_format(
    'official',
    "BAAI EVA-01 ViT files (weights under 'model' or 'module', fp16 "
    'allowed) -> EVAViT backbone.',
    add_backbone_arguments,
    recognise=_is_official)
def official(source: StateDict, args: argparse.Namespace) -> Conversion:
    """Official EVA-01 MIM / fine-tuned ViT weights (see module doc)."""
    return backbone_conversion(source, convert_official_eva(source), args)


@register_src_format('timm', "timm eva_* state dicts -> EVAViT backbone.",
                     add_backbone_arguments, recognise=_is_timm)
def timm(source: StateDict, args: argparse.Namespace) -> Conversion:
    """timm EVA-01 weights (see module doc)."""
    return backbone_conversion(source, convert_timm_eva(source), args)

