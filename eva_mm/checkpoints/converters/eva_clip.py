"""The BAAI EVA-CLIP release (``eva_clip_psz14.pt``) for open_clip / EVAViT.

The official EVA-CLIP (EVA-01/clip/eva_model.py:273-315, ``EVA_CLIP``) keeps
its vision tower under ``visual.`` with BEiT names (``visual.blocks.N.*``,
``visual.cls_token``, ``visual.norm``, the projection as ``visual.head``,
EVA-01/clip/vit_model.py:248-287) and its text tower under ``text.``
(open_clip's ``TextTransformer`` names, EVA-01/clip/eva_model.py:177-215,
with ``logit_scale`` inside it). open_clip's ``EVA01-g-14`` is the same
model with a timm tower: ``visual.trunk.*`` carries the same BEiT names
(the projection is the trunk's classifier ``visual.trunk.head``), the text
tower keeps ``text.*``, and ``logit_scale`` sits at the top. So:

- ``official-clip``: ``visual.X`` -> ``visual.trunk.X``, ``text.logit_scale``
  -> ``logit_scale``, the rest of ``text.*`` unchanged; the result is checked
  key by key against open_clip's model (``--clip-model``, on the meta device)
  and loads with ``open_clip.create_model(NAME, pretrained=DST)`` or
  ``tools/test.py configs/clip/... DST``.
- ``official-clip --vision-only``: the tower as EVAViT weights (cls token,
  final ``norm``), the projection and text tower dropped; ``--patch-size``
  / ``--img-size`` resize as for ``--src-format official``.

Every tensor is copied unchanged (DeepSpeed's fp16 values cast to fp32).
"""
import argparse
from typing import List, Mapping

import torch

from ..errors import CheckpointError
from ..eva01 import convert_official_eva
from ..open_clip_convert import TRUNK_PREFIX, VISUAL_PREFIX
from ..reading import unwrap_state_dict
from ..registry import (Conversion, add_argument_once, register_src_format,
                        src_format_hint)
from ..state_dict import (StateDict, absent_keys, compare_state_dicts,
                          rename_prefix, require_keys, to_fp32)
from .backbone import add_backbone_arguments, backbone_conversion

# Keys every official EVA-CLIP file has (EVA-01/clip/vit_model.py:261-287,
# eva_model.py:190-198).
_OFFICIAL_KEYS = ('visual.patch_embed.proj.weight', 'visual.cls_token',
                  'visual.blocks.0.attn.qkv.weight', 'visual.head.weight',
                  'visual.head.bias', 'text.token_embedding.weight',
                  'text.logit_scale')


def _is_official_clip(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """The BEiT-named tower right under ``visual.`` (open_clip's, which
    eva_mm loads as it is, is under ``visual.trunk.``)."""
    return not absent_keys(state_dict, _OFFICIAL_KEYS)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backbone_arguments(parser)
    add_argument_once(
        parser,
        '--vision-only',
        action='store_true',
        help='official-clip: write the vision tower as EVAViT weights '
        '(projection and text tower dropped) instead of the whole open_clip '
        'model.')
    add_argument_once(
        parser,
        '--clip-model',
        default='EVA01-g-14',
        help="official-clip: the open_clip model the whole-model output must "
        "fit (default 'EVA01-g-14').")


def _check_kind(source: StateDict) -> None:
    """One clear error for a file that is not an official EVA-CLIP."""
    if any(key.startswith(TRUNK_PREFIX) for key in source):
        kind = ("an open_clip EVA CLIP checkpoint (visual.trunk.*), already "
                'in the layout this format writes: load it as it is, or take '
                'its tower out with tools/model_converters/eva_clip.py import')
    elif 'blocks.0.attn.qkv.weight' in source:
        kind = ('an EVA-01 ViT without CLIP text tower: use '
                f'{src_format_hint("official")}')
    elif any(key.startswith(VISUAL_PREFIX + 'conv1.') for key in source):
        kind = ('an OpenAI-architecture CLIP (visual.conv1, ...), not '
                'EVA-CLIP')
    else:
        prefixes = sorted({key.split('.', 1)[0] for key in source})
        kind = f'another kind of file (top-level names {prefixes[:12]})'
    require_keys(source, _OFFICIAL_KEYS,
                 'the BAAI EVA-CLIP (eva_clip_psz14.pt) layout',
                 f'It looks like {kind}.')


def _fits_open_clip(weights: StateDict, model_name: str) -> None:
    """Refuse weights that ``open_clip.create_model(model_name)`` would not
    load strictly; the model is built on the meta device."""
    import open_clip
    try:
        with torch.device('meta'):
            expected = open_clip.create_model(
                model_name, device='meta').state_dict()
    except RuntimeError as err:
        raise CheckpointError(
            f'open_clip has no model {model_name!r} ({err}); pass '
            '--clip-model with an open_clip EVA CLIP name.') from err
    report = compare_state_dicts(expected, weights)
    if not report.fits:
        raise CheckpointError(
            f'The converted EVA-CLIP does not fit open_clip {model_name!r}: '
            f'missing {list(report.missing)}, unexpected '
            f'{list(report.unexpected)}, mis-shaped '
            f'{list(report.mismatched)}. Nothing was written; pick the '
            '--clip-model of '
            "this checkpoint's size (EVA01-g-14 for eva_clip_psz14.pt).")


@register_src_format(
    'official-clip',
    'BAAI EVA-CLIP eva_clip_psz14.pt (visual.blocks.*, visual.head, text.*) '
    "-> open_clip EVA01-g-14 state dict; with --vision-only -> EVAViT "
    'backbone.', _add_arguments, recognise=_is_official_clip)
def official_clip(source: StateDict, args: argparse.Namespace) -> Conversion:
    """The official EVA-CLIP (see module doc)."""
    source = unwrap_state_dict(source)
    _check_kind(source)
    if getattr(args, 'classifier', False):
        raise CheckpointError(
            '--classifier does not apply to official-clip: visual.head is '
            "CLIP's image projection, not an ImageNet classifier.")
    visual = rename_prefix(source, VISUAL_PREFIX)
    text = {key: value for key, value in source.items()
            if key.startswith('text.')}
    others = sorted(
        set(source) - set(text) - {VISUAL_PREFIX + k for k in visual})
    if others:
        raise CheckpointError(
            f'Keys outside the visual and text towers: {others}. This is not '
            'the plain BAAI EVA-CLIP state dict.')
    # Validates the tower's names (EVA-01 ViT, not EVA-02) and drops head.
    tower = convert_official_eva(visual)
    if getattr(args, 'vision_only', False):
        conversion = backbone_conversion(visual, tower, args)
        dropped: List[str] = [
            VISUAL_PREFIX + key for key in conversion.dropped
        ]
        conversion.dropped = dropped + sorted(text)
        conversion.meta['src_layout'] = 'official EVA-CLIP, vision tower'
        return conversion
    if getattr(args, 'patch_size', None) or getattr(args, 'img_size', None):
        raise CheckpointError(
            '--patch-size / --img-size resize the EVAViT output: use them '
            'with --vision-only (open_clip EVA01-g-14 is 224 px, patch 14).')
    weights = {TRUNK_PREFIX + key: value for key, value in tower.items()}
    weights[TRUNK_PREFIX + 'head.weight'] = visual['head.weight']
    weights[TRUNK_PREFIX + 'head.bias'] = visual['head.bias']
    for key, value in text.items():
        name = 'logit_scale' if key == 'text.logit_scale' else key
        weights[name] = value
    weights = to_fp32(weights)
    model_name = getattr(args, 'clip_model', 'EVA01-g-14')
    _fits_open_clip(weights, model_name)
    report = [
        f'open_clip {model_name} layout: {len(tower)} vision tensors under '
        f'visual.trunk., projection visual.trunk.head, {len(text) - 1} text '
        'tensors, logit_scale'
    ]
    return Conversion(weights, dict(open_clip_model=model_name), [], report)
