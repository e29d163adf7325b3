"""EVA-01 ViT weights as :class:`EVAViT` weights: checking and cleaning.

The official BAAI EVA-01 files and timm's ``eva_*`` models keep the EVA-01
parameter names, which are :class:`EVAViT`'s, so converting is dropping
heads and derived buffers, casting to fp32 and refusing any name that
EVA-01 does not have, with a hint at the format that fits. The ``official``
and ``timm`` formats (``converters/eva01_backbone.py``), the EVA-CLIP and
video formats and the open_clip conversion all start here.
"""
import re
from collections import Counter
from typing import Mapping

import torch

from eva_mm.models.backbones.eva_vit import EVAViT
from .errors import CheckpointError
from .reading import unwrap_state_dict
from .registry import src_format_hint
from .state_dict import StateDict, to_fp32

# Every parameter name an EVA-01 EVAViT can have; anything else in a
# converted file is a different architecture and must not be loaded
# silently. The names of the optional parts come from the model.
EVA01_KEY = re.compile(
    r'^(cls_token|mask_token|pos_embed'
    r'|patch_embed\.proj\.(weight|bias)'
    r'|blocks\.\d+\.(norm1|norm2)\.(weight|bias)'
    r'|blocks\.\d+\.attn\.(qkv\.weight|q_bias|v_bias|proj\.(weight|bias)'
    rf'|{"|".join(EVAViT.REL_POS_TABLES)})'
    r'|blocks\.\d+\.mlp\.(fc1|fc2)\.(weight|bias)'
    rf'|blocks\.\d+\.({"|".join(EVAViT.LAYER_SCALES)})'
    r'|(norm|fc_norm)\.(weight|bias))$')

# Parts of timm's EVA-02 (rotary embeddings, separate q/k/v, SwiGLU, sub-LN)
# that EVA-01 does not have.
EVA02_KEY = re.compile(r'(^rope\.|\.attn\.[qkv]_proj\.|\.attn\.norm\.'
                        r'|\.mlp\.fc1_[gx]\.|\.mlp\.norm\.)')

HEAD_KEY = re.compile(r'^(lm_head|head)\.')
DERIVED_KEY = re.compile(r'relative_position_index$')
# timm's always-zero key bias (a buffer that timm before 0.9 saved).
TIMM_K_BIAS = re.compile(r'\.attn\.k_bias$')


def is_eva01_vit(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a flat state dict is an EVA-01 image ViT, by its names.

    Every key is an EVA-01 parameter (:data:`EVA01_KEY`), a head, a derived
    index buffer or timm's key bias; the patch kernel is 2-D (the video ViT's
    is 3-D) and the MLPs are GELU ones: ``fc1`` has as many outputs as
    ``fc2`` has inputs (the packed SwiGLU ``fc1`` of timm's EVA-02 Ti/S,
    which has the same names, has twice as many).

    Args:
        state_dict: Flat weights (values may be meta tensors).

    Returns:
        True for the official EVA-01 files and timm's ``eva_*`` models.
    """
    kernel = state_dict.get('patch_embed.proj.weight')
    fc1 = state_dict.get('blocks.0.mlp.fc1.weight')
    fc2 = state_dict.get('blocks.0.mlp.fc2.weight')
    if kernel is None or kernel.dim() != 4 or fc1 is None or fc2 is None \
            or 'blocks.0.attn.qkv.weight' not in state_dict:
        return False
    return fc1.shape[0] == fc2.shape[1] and all(
        EVA01_KEY.match(key) or HEAD_KEY.match(key)
        or DERIVED_KEY.search(key) or TIMM_K_BIAS.search(key)
        for key in state_dict)


def _check_eva01_keys(state_dict: Mapping[str, torch.Tensor],
                      src_format: str) -> None:
    eva02 = sorted(k for k in state_dict if EVA02_KEY.search(k))
    if eva02:
        raise CheckpointError(
            f'This looks like an EVA-02 checkpoint ({len(eva02)} keys such '
            f'as {eva02[:4]}): convert it with '
            f'{src_format_hint("timm-eva02", "official-eva02")} (timm '
            'eva02_* models or BAAI EVA-02 files), which fuse q/k/v and map '
            'the SwiGLU MLPs for an eva02-* EVAViT.')
    unknown = sorted(k for k in state_dict if not EVA01_KEY.match(k))
    if not unknown:
        return
    hint = (f' Is {src_format_hint(src_format)} right for this file? Of '
            f'{src_format_hint("official", "timm")}, the first reads the '
            'BAAI EVA-01 names (blocks.N.attn.qkv.weight, ...), the second '
            "those of timm's eva_* models.")
    nested = Counter(
        key.split('.', 1)[0] + '.' for key in unknown
        if '.' in key and EVA01_KEY.match(key.split('.', 1)[1]))
    if nested:
        # An eva_mm detector or segmentor: its backbone is already EVAViT.
        hint = (f' The keys look like a whole model with the backbone under '
                f'{nested.most_common(1)[0][0]!r}: it needs no conversion, '
                'load it with init_cfg=dict(type=\'Pretrained\', '
                f"checkpoint=..., prefix={nested.most_common(1)[0][0]!r}).")
    raise CheckpointError(
        f'{len(unknown)} key(s) are not EVA-01 ViT parameters: '
        f'{unknown}.{hint}')


def convert_official_eva(state_dict: Mapping) -> StateDict:
    """Convert an official BAAI EVA-01 checkpoint to EVAViT weights.

    The official names are already EVAViT's; this unwraps ``'model'`` /
    ``'module'``, casts DeepSpeed's fp16 weights to fp32 and drops the MIM
    ``lm_head`` and any classifier ``head``, which are not backbone weights.

    Args:
        state_dict: The loaded file, wrapped or not.

    Returns:
        The EVAViT state dict.

    Raises:
        CheckpointError: If keys that EVA-01 does not have remain.
    """
    weights = unwrap_state_dict(state_dict)
    weights = {
        key: value
        for key, value in weights.items()
        if not (HEAD_KEY.match(key) or DERIVED_KEY.search(key))
    }
    _check_eva01_keys(weights, 'official')
    return to_fp32(weights)


def convert_timm_eva(state_dict: Mapping) -> StateDict:
    """Convert a timm ``eva_*`` (EVA-01) checkpoint to EVAViT weights.

    timm keeps the EVA-01 names; this drops the classifier ``head`` and the
    always-zero ``k_bias`` buffer (non-persistent, but present in files saved
    from older timm), and keeps ``norm`` / ``fc_norm`` as they are: load the
    result into an EVAViT built with the same pooling (``fc_norm`` comes with
    ``out_type='avg_featmap', final_norm=False, use_fc_norm=True``).

    Args:
        state_dict: The timm state dict.

    Returns:
        The EVAViT state dict.

    Raises:
        CheckpointError: For EVA-02 checkpoints (rotary embeddings, SwiGLU),
            which EVA-01 cannot represent, and for any other foreign key.
    """
    weights = unwrap_state_dict(state_dict)
    weights = {
        key: value
        for key, value in weights.items()
        if not (key.startswith('head.') or TIMM_K_BIAS.search(key))
    }
    _check_eva01_keys(weights, 'timm')
    return to_fp32(weights)
