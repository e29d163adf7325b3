"""EVA-02 ViT weights: the official BAAI files and timm ``eva02_*`` models.

Both become :class:`EVAViT` weights (EVA-01 names plus timm's EVA-02 ones):

- q/k/v: separate ``attn.q_proj``/``k_proj``/``v_proj`` (official base/large
  and the detection backbone; timm with ``qkv_fused=False``) are fused into
  ``attn.qkv.weight`` = cat(q, k, v); the biases stay ``attn.q_bias`` and
  ``attn.v_bias`` (timm keeps them in ``q_proj.bias``/``v_proj.bias``); the
  key has no bias.
- SwiGLU: the official ``mlp.w1``/``w2``/``ffn_ln``/``w3`` (naive SwiGLU of
  base/large, EVA-02/asuka/modeling_finetune.py:91-116) are timm's
  ``mlp.fc1_g``/``fc1_x``/``norm``/``fc2``; the packed ``mlp.w12`` of
  xformers' SwiGLU (official tiny/small) and timm's packed ``mlp.fc1``
  (``GluMlp``) hold the gate in the first half and are split.
- Dropped (and listed): the MIM ``lm_head`` (the regression head onto the
  EVA-CLIP teacher's features; the teacher itself is not saved,
  EVA-02/asuka/run_eva02_pretraining.py:272-284), classifier ``head``, the
  derived RoPE tables ``rope.freqs_cos``/``freqs_sin`` (also under every
  ``blocks.N.attn.rope.``: the shared module is saved once per block) and
  timm's zero ``k_bias``.

The ``_p14to16`` detection initialisations are the MIM files with the patch
kernel resized bicubically to 16 and the position grid to 14 x 14 (the
official ``interpolate_patch_14to16.py``); they convert like the MIM files,
and ``--patch-size 16 --img-size 224`` makes the same from a patch-14 file.
"""
import argparse
import re
from typing import Dict, List, Mapping, Tuple

import torch

from ..errors import CheckpointError
from ..eva01 import DERIVED_KEY, EVA01_KEY, HEAD_KEY
from ..reading import unwrap_state_dict
from ..registry import Conversion, register_src_format, src_format_hint
from ..state_dict import StateDict, absent_keys, to_fp32
from .backbone import add_backbone_arguments, backbone_conversion

# Keys with no EVAViT counterpart that a backbone file may hold, besides
# heads and derived index buffers: the RoPE tables and timm's zero k_bias.
_DROPPED = re.compile(r'(^|\.)rope\.|\.attn\.k_bias$')

# The names EVA-02 adds to EVA-01's (timm's, which EVAViT keeps).
_EVA02_ONLY = re.compile(
    r'^blocks\.\d+\.(attn\.norm|mlp\.(fc1_g|fc1_x|norm))\.(weight|bias)$')

# Official (and EVA-CLIP) names -> timm's, within a block.
_RENAMES = (('.mlp.w1.', '.mlp.fc1_g.'), ('.mlp.w2.', '.mlp.fc1_x.'),
            ('.mlp.w3.', '.mlp.fc2.'), ('.mlp.ffn_ln.', '.mlp.norm.'),
            ('.attn.inner_attn_ln.', '.attn.norm.'))

_QKV = re.compile(r'^(blocks\.\d+\.attn\.)([qkv])_proj\.(weight|bias)$')
_PACKED = re.compile(r'^(blocks\.\d+\.mlp\.)(w12|fc1)\.(weight|bias)$')


def _is_official_eva02(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """The official EVA-02 ViT names its SwiGLU output ``w3`` in every size
    (modeling_finetune.py:91-116, and xformers' packed SwiGLU of Ti/S)."""
    return not absent_keys(
        state_dict, ('patch_embed.proj.weight', 'blocks.0.mlp.w3.weight'))


def _is_timm_eva02(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """timm's EVA-02: separate q/k/v with the q/v biases in ``q_proj.bias``
    and ``v_proj.bias`` (B, L), or a packed SwiGLU ``fc1`` twice as wide as
    ``fc2``'s input (Ti, S); EVAViT fuses q/k/v and splits the SwiGLU, so
    its own EVA-02 weights are neither."""
    fc1 = state_dict.get('blocks.0.mlp.fc1.weight')
    fc2 = state_dict.get('blocks.0.mlp.fc2.weight')
    packed = fc1 is not None and fc2 is not None and \
        fc1.shape[0] == 2 * fc2.shape[1]
    return 'patch_embed.proj.weight' in state_dict and (
        packed or 'blocks.0.attn.q_proj.bias' in state_dict)


def _fuse_qkv(weights: StateDict, projections: Dict[str, Dict[str,
                                                               torch.Tensor]]
              ) -> None:
    for prefix, parts in sorted(projections.items()):
        absent = [name for name in ('q.weight', 'k.weight', 'v.weight')
                  if name not in parts]
        if absent:
            raise CheckpointError(
                f'{prefix} has separate q/k/v projections but lacks '
                f'{[prefix + n[0] + "_proj." + n[2:] for n in absent]}: the '
                'file is incomplete.')
        if 'k.bias' in parts and bool(parts['k.bias'].any()):
            raise CheckpointError(
                f'{prefix}k_proj.bias is not zero: EVA attention has no key '
                'bias, so these weights cannot be represented exactly.')
        weights[prefix + 'qkv.weight'] = torch.cat(
            [parts['q.weight'], parts['k.weight'], parts['v.weight']])
        # timm keeps the EVA q/v biases in q_proj.bias / v_proj.bias.
        for name in ('q', 'v'):
            if f'{name}.bias' in parts:
                weights[f'{prefix}{name}_bias'] = parts[f'{name}.bias']


def _split_packed(weights: StateDict, key: str, value: torch.Tensor,
                  fc2_in: int) -> None:
    """Split a packed SwiGLU ``fc1``/``w12`` (gate first) in two.

    xformers' SwiGLU unbinds ``w12`` into (w1, w2) and computes
    ``silu(x w1) * (x w2)``; timm's ``GluMlp(gate_last=False)`` does the same
    with its ``fc1``.
    """
    match = _PACKED.match(key)
    prefix, _, kind = match.groups()
    if value.shape[0] != 2 * fc2_in:
        raise CheckpointError(
            f'{key} has {value.shape[0]} outputs, not twice the {fc2_in} '
            'inputs of mlp.fc2: not a packed SwiGLU.')
    gate, linear = value.chunk(2, dim=0)
    weights[f'{prefix}fc1_g.{kind}'] = gate
    weights[f'{prefix}fc1_x.{kind}'] = linear


def convert_eva02_keys(state_dict: Mapping[str, torch.Tensor]
                       ) -> Tuple[StateDict, List[str]]:
    """Map official or timm EVA-02 ViT keys to :class:`EVAViT` keys.

    The reusable core of the EVA-02 converters (the MIM backbone here; the
    detector and segmentor converters pass their backbone's keys, prefix
    stripped). Values are cast to fp32 and otherwise copied unchanged,
    except that separate q/k/v weights are concatenated and packed SwiGLU
    weights split (see the module doc).

    Args:
        state_dict: The backbone's weights, without prefix: the official
            EVA-02 names (EVA-02/asuka/modeling_pretrain.py,
            modeling_finetune.py, det/.../backbone/vit.py), EVA-CLIP's
            vision tower or timm's ``Eva``.

    Returns:
        The EVAViT weights and the sorted source keys dropped on purpose
        (heads, RoPE tables, ``k_bias``).

    Raises:
        CheckpointError: For keys that are no EVA-02 ViT parameter, an
            incomplete q/k/v triple or a non-zero key bias.
    """
    weights: StateDict = {}
    dropped: List[str] = []
    unknown: List[str] = []
    projections: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, value in to_fp32(state_dict).items():
        if HEAD_KEY.match(key) or DERIVED_KEY.search(key) or \
                _DROPPED.search(key):
            dropped.append(key)
            continue
        qkv = _QKV.match(key)
        if qkv:
            prefix, name, kind = qkv.groups()
            projections.setdefault(prefix, {})[f'{name}.{kind}'] = value
            continue
        if _PACKED.match(key):
            fc2 = key.rsplit('.', 2)[0] + '.' + (
                'w3' if '.w12.' in key else 'fc2') + '.weight'
            if fc2 not in state_dict:
                raise CheckpointError(f'{key} comes without {fc2}.')
            fc2_in = state_dict[fc2].shape[1]
            if '.fc1.' in key and value.shape[0] == fc2_in:
                # A GELU MLP's fc1 (EVA-01 style), not a packed SwiGLU.
                weights[key] = value
            else:
                _split_packed(weights, key, value, fc2_in)
            continue
        for old, new in _RENAMES:
            key = key.replace(old, new)
        if EVA01_KEY.match(key) or _EVA02_ONLY.match(key):
            weights[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f'{len(unknown)} key(s) are no EVA-02 ViT parameters: '
            f'{sorted(unknown)[:20]}. The EVA-02 formats read the official '
            'BAAI EVA-02 backbone names (official-eva02) and timm eva02_* '
            "models (timm-eva02); EVA-01 files use 'official' or 'timm'.")
    _fuse_qkv(weights, projections)
    return weights, sorted(dropped)


def _conversion(source: Mapping, args: argparse.Namespace,
                what: str) -> Conversion:
    state = unwrap_state_dict(source)
    if 'patch_embed.proj.weight' not in state:
        raise CheckpointError(
            f'The file has no patch_embed.proj.weight: not {what} (whole '
            'detectors and segmentors have their own formats: '
            + src_format_hint('official-eva02-det', 'official-eva02-seg',
                              'official-det', 'official-seg') + ').')
    weights, dropped = convert_eva02_keys(state)
    if not any(key.endswith('.fc1_g.weight') for key in weights):
        # Every EVA-02 ViT has SwiGLU MLPs.
        raise CheckpointError(
            f'No SwiGLU MLP: this is not {what} but an EVA-01 ViT; use '
            f'{src_format_hint("official", "timm")}.')
    conversion = backbone_conversion(state, weights, args)
    classifier = getattr(args, 'classifier', False)
    conversion.dropped = [
        key for key in dropped if not (classifier and key.startswith('head.'))
    ]
    conversion.meta.update(
        scale_mlp=any('.mlp.norm.' in key for key in weights),
        scale_attn_inner=any('.attn.norm.' in key for key in weights))
    conversion.report.append(
        'EVA-02 weights: build EVAViT with the eva02-* arch of this size '
        f'(scale_mlp={conversion.meta["scale_mlp"]}, scale_attn_inner='
        f'{conversion.meta["scale_attn_inner"]})')
    return conversion


@register_src_format(
    'official-eva02',
    'BAAI EVA-02 ViT files: MIM eva02_{Ti,S,B,L}_pt_*_p14.pt, the '
    '_p14to16 detection initialisations and fine-tuned classifiers '
    '(q/k/v fused, SwiGLU renamed, lm_head and RoPE tables dropped) -> '
    'EVAViT backbone.', add_backbone_arguments,
    recognise=_is_official_eva02)
def official_eva02(source: StateDict, args: argparse.Namespace) -> Conversion:
    """Official EVA-02 backbone weights (see module doc)."""
    return _conversion(source, args, 'an official EVA-02 ViT')


@register_src_format(
    'timm-eva02',
    'timm eva02_* state dicts (q/k/v fused, packed SwiGLU split) -> EVAViT '
    'backbone.', add_backbone_arguments, recognise=_is_timm_eva02)
def timm_eva02(source: StateDict, args: argparse.Namespace) -> Conversion:
    """timm EVA-02 weights (see module doc)."""
    return _conversion(source, args, 'a timm eva02_* model')
