"""EVA-01 ViT weights: the official BAAI files and timm ``eva_*`` models.

Both keep the EVA-01 parameter names, which are :class:`EVAViT`'s; the
result is a backbone checkpoint (or, with ``--classifier``, an mmpretrain
``ImageClassifier``), optionally with the patch kernel and the position
embedding resized for another patch or image size.
"""
import argparse

from ..eva01 import convert_official_eva, convert_timm_eva
from ..registry import Conversion, register_src_format
from ..state_dict import StateDict
from .backbone import add_backbone_arguments, backbone_conversion


@register_src_format(
    'official',
    "BAAI EVA-01 ViT files (weights under 'model' or 'module', fp16 "
    'allowed) -> EVAViT backbone.',
    add_backbone_arguments)
def official(source: StateDict, args: argparse.Namespace) -> Conversion:
    """Official EVA-01 MIM / fine-tuned ViT weights (see module doc)."""
    return backbone_conversion(source, convert_official_eva(source), args)


@register_src_format('timm', "timm eva_* state dicts -> EVAViT backbone.",
                     add_backbone_arguments)
def timm(source: StateDict, args: argparse.Namespace) -> Conversion:
    """timm EVA-01 weights (see module doc)."""
    return backbone_conversion(source, convert_timm_eva(source), args)

