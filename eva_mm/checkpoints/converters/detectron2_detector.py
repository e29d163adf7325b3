"""The released EVA-01 detectors: detectron2 Cascade (Mask) R-CNN files.

``eva_o365.pth``, ``eva_coco_det.pth``, ``eva_coco_seg.pth`` and
``eva_lvis.pth`` are state dicts (under ``'model'``) of detectron2's
``GeneralizedRCNN`` with the official EVA-01 ViT + ``SimpleFeaturePyramid``
backbone, ``StandardRPNHead`` and ``CascadeROIHeads``. Format
``official-det`` renames every tensor to the eva_mm detector of the EVA
detection configs (``EVAViT`` + ``SimpleFPN`` + ``RPNHead`` +
``eva_mm.Detectron2CascadeRoIHead``), checked tensor for tensor:

- ``backbone.net.*`` -> ``backbone.*`` (EVAViT keeps the official names); the
  224 px ``pos_embed`` (14 x 14 + cls, EVA-01/det/detectron2/modeling/
  backbone/vit.py:386-388) loses its cls entry and is resized bicubically to
  the training grid, as ``get_abs_pos`` (modeling/backbone/utils.py:166-189)
  does at every forward; global blocks' ``rel_pos_h/w`` that do not fit that
  grid become zeros, as in the official fine-tuning (detectron2's loader
  skips tensors of another shape, checkpoint/c2_model_loading.py:263-275,
  and the tables keep their zero init, ``rel_pos_zero_init=True``,
  vit.py:110-118, 333), or, with ``--rel-pos-resize`` or a config whose
  backbone sets ``rel_pos_resize`` (the 1536 px evaluation configs), are
  resized as the official evaluation does at run time;
- ``backbone.simfp_<stage>.<i>`` (vit.py:513-546; the last two layers are
  the 1x1 and 3x3 ``Conv2d`` with a ``.norm``, the ones before the
  up/down-sampling) -> ``neck.rescales.<level>.<i>``,
  ``neck.lateral_convs.<level>`` and ``neck.fpn_convs.<level>``;
- ``proposal_generator.rpn_head.{conv.conv<j>, objectness_logits,
  anchor_deltas}`` -> ``rpn_head.{rpn_conv.<j>.conv, rpn_cls, rpn_reg}``
  unchanged: both libraries order the outputs anchor-major (anchor a's
  logit in channel a, its deltas dx, dy, dw, dh in channels 4a..4a+3) with
  the anchors of a position ordered by aspect ratio 0.5, 1, 2 (detectron2
  ``DefaultAnchorGenerator`` sizes x ratios, mmdet ``AnchorGenerator``
  ratios x scales with one scale), and both use h / w as the ratio;
- ``roi_heads.box_head.<k>.{conv1..4 (+ .norm), fc1}`` ->
  ``roi_head.bbox_head.<k>.{shared_convs.0..3.{conv, ln}, shared_fcs.0}``;
- ``roi_heads.box_predictor.<k>.{cls_score, bbox_pred}`` ->
  ``roi_head.bbox_head.<k>.{fc_cls, fc_reg}`` unchanged: both put the
  background in the last of the K + 1 scores and regress one class-agnostic
  (dx, dy, dw, dh), scaled by the same weights (detectron2's
  ``BBOX_REG_WEIGHTS`` are 1 / mmdet's ``target_stds``);
- ``roi_heads.mask_head.{mask_fcn1..4 (+ .norm), deconv, predictor}`` ->
  ``roi_head.mask_head.{convs.0..3.{conv, ln}, upsample, conv_logits}``.

Dropped: ``roi_heads.box_predictor.<k>.fed_loss_cls_weights`` of
``eva_lvis.pth`` (the federated loss reads the class frequencies from the
LVIS annotations) and, if present, ``pixel_mean`` / ``pixel_std`` (the data
preprocessor's config holds them). Any other key is an error.
"""
import argparse
import math
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from eva_mm.models.layers.pos_embed import TargetSizes, fit_state_dict
from ..errors import CheckpointError
from ..registry import (Conversion, add_argument_once, model_config,
                        register_src_format, src_format_hint)
from ..state_dict import (StateDict, absent_keys, rename_prefix, require_keys,
                          to_fp32)
from .backbone import add_backbone_arguments

_BACKBONE = 'backbone.net.'
_RPN = 'proposal_generator.rpn_head.'
# Prefixes every released EVA-01 detector has (eva_o365.pth has no mask
# head, so it is not among them).
_REQUIRED = (_BACKBONE + 'patch_embed.proj.weight', _BACKBONE + 'blocks.',
             'backbone.simfp_', _RPN + 'objectness_logits.weight',
             'roi_heads.box_head.', 'roi_heads.box_predictor.')
# Buffers of the source without a counterpart in the mmdet model.
_DROPPED = re.compile(
    r'^(roi_heads\.box_predictor\.\d+\.fed_loss_cls_weights|pixel_mean|'
    r'pixel_std)$')
# detectron2 Conv2d(..., norm=LN) keeps its norm as '.norm'; mmcv's
# ConvModule names eva_mm.LN2d 'ln'.
_CONV_NORM = re.compile(r'^(?P<conv>.+)\.norm\.(?P<param>weight|bias)$')


def add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``official-det``: the training size and rel-pos resize.

    Args:
        parser: The converter tool's parser.
    """
    # --img-size is the backbone formats' option, shared.
    add_backbone_arguments(parser)
    add_argument_once(
        parser,
        '--rel-pos-resize',
        choices=('linear', 'beit'),
        help="official-det: resize global blocks' relative position tables "
        "that do not fit the target grid this way (default: the config's "
        'backbone.rel_pos_resize, set by the 1536 px evaluation configs). '
        'Without either they become zeros, as the official fine-tuning '
        'starts them (its loader skips tensors of another shape).')


def _is_official_det(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """detectron2's names around an EVA-01 ViT (fused ``qkv``; EVA-02's has
    ``q_proj``), where eva_mm's detector has no ``backbone.net.``."""
    return not absent_keys(state_dict, _REQUIRED) and \
        _BACKBONE + 'blocks.0.attn.qkv.weight' in state_dict


def _sizes_config(args: argparse.Namespace) -> Optional[object]:
    """The config the sizes are read from: ``--config``, or the
    ``target_config`` of a conversion in memory for a model to load into
    (:func:`~eva_mm.checkpoints.recognition.convert_in_memory`), which is
    not checked for the class count: a fine-tuning on another class set
    loads such a file with its class scores skipped (docs/detection.md)."""
    return getattr(args, 'config', None) or getattr(args, 'target_config',
                                                    None)


def _config_backbone(config: Optional[object]) -> Dict[str, object]:
    """The backbone settings of ``config`` (empty without one)."""
    if not config:
        return {}
    return dict(model_config(config).backbone)


def _target_grid(args: argparse.Namespace, patch_size: int,
                 backbone_cfg: Dict[str, object]) -> Tuple[int, int]:
    """The patch grid of the target model, from --img-size or the config.

    Raises:
        CheckpointError: If neither gives the image size.
    """
    img_size = getattr(args, 'img_size', None)
    if img_size:
        size = (img_size[0], img_size[-1])
    elif 'img_size' in backbone_cfg:
        value = backbone_cfg['img_size']
        size = (value, value) if isinstance(value, int) else tuple(value)
    else:
        raise CheckpointError(
            'official-det needs the image size the detector runs at, for '
            'its position embedding: pass --config CONFIG (the detection '
            'config to load it into) or --img-size SIZE (e.g. 1280 for the '
            'released COCO/LVIS detectors, 1024 for eva_o365.pth).')
    if size[0] % patch_size or size[1] % patch_size:
        raise CheckpointError(
            f'Image size {size} is not a multiple of the patch size '
            f'{patch_size}.')
    return size[0] // patch_size, size[1] // patch_size


def _convert_backbone(source: StateDict, grid: Tuple[int, int],
                      rel_pos_mode: Optional[str],
                      report: List[str]) -> StateDict:
    """``backbone.net.*`` as EVAViT weights for a ``grid`` of patches.

    Sizes are fitted by the one resizing path of every EVAViT load,
    :func:`fit_state_dict`, told the checkpoint's layout explicitly. Global
    rel-pos tables of another grid are resized (``rel_pos_mode``) or, with
    ``None``, replaced by zeros.
    """
    weights = rename_prefix(source, _BACKBONE, 'backbone.')
    extra = 0
    pos_embed = weights.get('backbone.pos_embed')
    if pos_embed is not None:
        # A square grid plus one cls position (pretrain_use_cls_token=True,
        # EVA-01/det/detectron2/modeling/backbone/vit.py:339,386-388), whose
        # entry the detector never uses (get_abs_pos); or a square grid.
        tokens = pos_embed.shape[1]
        extra = 0 if math.isqrt(tokens)**2 == tokens else 1
        side = math.isqrt(tokens - extra)
        if side * side != tokens - extra:
            raise CheckpointError(
                f'backbone.net.pos_embed has {tokens} positions: neither a '
                'square grid nor a square grid plus a cls position.')
        report.append(f'pos_embed: {side}x{side}' + ' + cls' * extra +
                      f' -> {grid[0]}x{grid[1]} (bicubic, as get_abs_pos)')
    # Window blocks have the shortest tables (2 * window - 1); the others
    # are global and follow the grid.
    tables = {
        key[len('backbone.'):]: value.shape[0]
        for key, value in weights.items()
        if key.endswith(('.attn.rel_pos_h', '.attn.rel_pos_w'))
    }
    window_len = min(tables.values(), default=0)
    global_lengths = {
        key: 2 * (grid[0] if key.endswith('_h') else grid[1]) - 1
        for key, length in tables.items() if length != window_len
    }
    mismatched = sorted(key for key, length in global_lengths.items()
                        if length != tables[key])
    if mismatched and rel_pos_mode is None:
        # What the official fine-tuning starts from: detectron2's loader
        # skips tensors whose shape differs from the model's
        # (EVA-01/det/detectron2/checkpoint/c2_model_loading.py:263-275),
        # so these keep their zero init (rel_pos_zero_init=True,
        # modeling/backbone/vit.py:110-118, 333).
        for key in mismatched:
            table = weights['backbone.' + key]
            weights['backbone.' + key] = table.new_zeros(
                global_lengths[key], table.shape[1])
        blocks = sorted({int(key.split('.')[1]) for key in mismatched})
        report.append(
            f're-initialised to zeros: rel_pos_h/w of global blocks {blocks} '
            f'({sorted({tables[key] for key in mismatched})} rows do not fit '
            f'the {grid[0]}x{grid[1]} grid), as the official fine-tuning '
            'starts them; --rel-pos-resize resizes them instead')
    fit_state_dict(
        weights,
        TargetSizes(pos_grid=grid, with_cls_token=False,
                    rel_pos_lengths=global_lengths,
                    # Zeroed tables fit already: no mode is used for them.
                    rel_pos_resize=rel_pos_mode or 'linear'),
        prefix='backbone.',
        src_extra_tokens=extra)
    if mismatched and rel_pos_mode is not None:
        report.append(f'{len(mismatched)} global rel-pos tables resized '
                      f'({rel_pos_mode}) to the {grid[0]}x{grid[1]} grid')
    return weights


def _conv_with_norm(key: str, target: str) -> str:
    """detectron2 ``<conv>.weight`` / ``<conv>.norm.*`` under ``target``."""
    match = _CONV_NORM.match(key)
    if match:
        return f'{target}.ln.{match["param"]}'
    return f'{target}.conv.{key.rsplit(".", 1)[1]}'


def _convert_neck(source: StateDict) -> StateDict:
    """``backbone.simfp_<stage>.<i>.*`` as SimpleFPN weights."""
    layers: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in source.items():
        match = re.match(r'^backbone\.simfp_(\d+)\.(.+)$', key)
        if match:
            layers.setdefault(int(match[1]), {})[match[2]] = value
    weights = {}
    # Finest level (lowest stage) first, as SimpleFPN's scale factors.
    for level, stage in enumerate(sorted(layers)):
        params = layers[stage]
        last = max(int(name.split('.', 1)[0]) for name in params)
        for name, value in params.items():
            index, rest = name.split('.', 1)
            index = int(index)
            if index == last - 1:
                key = _conv_with_norm(name, f'neck.lateral_convs.{level}')
            elif index == last:
                key = _conv_with_norm(name, f'neck.fpn_convs.{level}')
            else:
                # Deconvolutions and the LayerNorm between them.
                key = f'neck.rescales.{level}.{index}.{rest}'
            weights[key] = value
    return weights


def _convert_heads(source: StateDict) -> StateDict:
    """RPN, cascade box heads and predictors, and the mask head."""
    weights = {}
    for key, value in source.items():
        new = None
        if key.startswith(_RPN):
            name = key[len(_RPN):]
            conv = re.match(r'^conv\.conv(\d+)\.(weight|bias)$', name)
            if conv:
                new = f'rpn_head.rpn_conv.{conv[1]}.conv.{conv[2]}'
            elif name == 'conv.weight' or name == 'conv.bias':
                # One conv (conv_dims of length 1) is not a Sequential.
                new = f'rpn_head.rpn_conv.{name[len("conv."):]}'
            else:
                new = re.sub(r'^objectness_logits\.', 'rpn_head.rpn_cls.',
                             name)
                new = re.sub(r'^anchor_deltas\.', 'rpn_head.rpn_reg.', new)
                if not new.startswith('rpn_head.'):
                    new = None
        elif key.startswith('roi_heads.box_head.'):
            match = re.match(r'^roi_heads\.box_head\.(\d+)\.(conv|fc)(\d+)\.',
                             key)
            if match:
                stage, kind, index = match[1], match[2], int(match[3]) - 1
                prefix = f'roi_head.bbox_head.{stage}.'
                if kind == 'conv':
                    new = _conv_with_norm(key,
                                          f'{prefix}shared_convs.{index}')
                else:
                    new = (f'{prefix}shared_fcs.{index}.'
                           f'{key.rsplit(".", 1)[1]}')
        elif key.startswith('roi_heads.box_predictor.'):
            match = re.match(
                r'^roi_heads\.box_predictor\.(\d+)\.(cls_score|bbox_pred)\.'
                r'(weight|bias)$', key)
            if match:
                layer = 'fc_cls' if match[2] == 'cls_score' else 'fc_reg'
                new = f'roi_head.bbox_head.{match[1]}.{layer}.{match[3]}'
        elif key.startswith('roi_heads.mask_head.'):
            name = key[len('roi_heads.mask_head.'):]
            fcn = re.match(r'^mask_fcn(\d+)\.', name)
            if fcn:
                new = _conv_with_norm(
                    key, f'roi_head.mask_head.convs.{int(fcn[1]) - 1}')
            elif name.startswith('deconv.'):
                new = 'roi_head.mask_head.upsample.' + name[len('deconv.'):]
            elif name.startswith('predictor.'):
                new = ('roi_head.mask_head.conv_logits.' +
                       name[len('predictor.'):])
        if new is not None:
            weights[new] = value
    return weights


def _num_classes(source: StateDict) -> Optional[int]:
    """K of the K + 1 scores of the first cascade stage."""
    score = source.get('roi_heads.box_predictor.0.cls_score.weight')
    return None if score is None else int(score.shape[0]) - 1


def _check_class_count(num_classes: Optional[int],
                       config: Optional[str]) -> None:
    """One clear error when the config's detector has another class count.

    Raises:
        CheckpointError: Naming both counts and the fix.
    """
    if not config or num_classes is None:
        return
    roi_head = model_config(config).get('roi_head') or {}
    heads = roi_head.get('bbox_head') or []
    heads = heads if isinstance(heads, (list, tuple)) else [heads]
    for head in heads:
        if head.get('num_classes') not in (None, num_classes):
            raise CheckpointError(
                f'The checkpoint detects {num_classes} classes but {config} '
                f'has num_classes={head["num_classes"]} (COCO 80, LVIS '
                '1203, Objects365 365). Convert with the config of the '
                "checkpoint's dataset; to fine-tune on another class set, "
                'convert without --config and set load_from in your config: '
                'the mis-shaped class scores and mask predictor are skipped '
                'and trained from scratch (docs/detection.md).')


@register_src_format(
    'official-det',
    'Released EVA-01 detectron2 detectors (eva_o365/eva_coco_det/'
    "eva_coco_seg/eva_lvis.pth, weights under 'model') -> the eva_mm "
    'Cascade (Mask) R-CNN of configs/detection (needs --config or '
    '--img-size).', add_detector_arguments, recognise=_is_official_det)
def official_det(source: StateDict, args: argparse.Namespace) -> Conversion:
    """An official EVA-01 detector (see the module doc).

    Args:
        source: The flat source state dict.
        args: ``config``, ``img_size`` and ``rel_pos_resize`` options.

    Returns:
        The conversion, named as the eva_mm detector.

    Raises:
        CheckpointError: For a file of another kind (a backbone, MIM or
            segmentation checkpoint), keys without a counterpart, or a class
            count that does not fit ``--config``.
    """
    require_keys(
        source, _REQUIRED, 'an EVA-01 detectron2 detector (eva_o365.pth, '
        'eva_coco_det.pth, eva_coco_seg.pth or eva_lvis.pth)',
        'For EVA-01 MIM or backbone weights use '
        f'{src_format_hint("official")} (and model.backbone.init_cfg); '
        'segmentation checkpoints are not detectors.')
    return convert_detector(source, args)


def convert_detector(source: StateDict, args: argparse.Namespace,
                     dropped: Sequence[str] = ()) -> Conversion:
    """A detectron2 Cascade (Mask) R-CNN whose ViT has EVAViT's names.

    The body of ``official-det``, shared with ``official-eva02-det``, which
    renames the EVA-02 ViT first (see the module doc for the rest).

    Args:
        source: The flat source state dict, ``backbone.net.*`` named as
            EVAViT (EVA-01 files are).
        args: ``config``, ``img_size`` and ``rel_pos_resize`` options.
        dropped: Source keys the caller already left out on purpose.

    Returns:
        The conversion, named as the eva_mm detector.

    Raises:
        CheckpointError: For keys without a counterpart or a class count
            that does not fit ``--config``.
    """
    num_classes = _num_classes(source)
    _check_class_count(num_classes, getattr(args, 'config', None))
    backbone_cfg = _config_backbone(_sizes_config(args))
    patch_size = int(source[_BACKBONE + 'patch_embed.proj.weight'].shape[-1])
    grid = _target_grid(args, patch_size, backbone_cfg)
    # None: global tables of another grid become zeros (the official
    # fine-tuning); a mode: they are resized (the official evaluation at
    # another size, which the 1536 px configs set).
    rel_pos_mode = (getattr(args, 'rel_pos_resize', None)
                    or backbone_cfg.get('rel_pos_resize'))
    report: List[str] = []
    weights = _convert_backbone(source, grid, rel_pos_mode, report)
    weights.update(_convert_neck(source))
    weights.update(_convert_heads(source))
    weights = to_fp32(weights)
    own = [key for key in source if _DROPPED.match(key)]
    leftover = sorted(set(source) - set(own) - _source_keys_mapped(source))
    dropped = sorted([*dropped, *own])
    if leftover:
        raise CheckpointError(
            f'{len(leftover)} key(s) of the detector have no counterpart in '
            f'the eva_mm model: {leftover[:20]}. Is it a detectron2 model '
            'other than the EVA-01 Cascade (Mask) R-CNN?')
    with_mask = any(key.startswith('roi_head.mask_head.') for key in weights)
    num_stages = len({
        key.split('.')[2]
        for key in weights if key.startswith('roi_head.bbox_head.')
    })
    report.insert(
        0, f'{num_classes} classes, {num_stages} cascade stages, '
        + ('with' if with_mask else 'without') + ' mask head')
    meta = dict(
        num_classes=num_classes,
        num_stages=num_stages,
        with_mask=with_mask,
        patch_grid=list(grid))
    return Conversion(weights, meta, dropped, report)


def _source_keys_mapped(source: StateDict) -> set:
    """The source keys that :func:`official_det` converts (for errors)."""
    mapped = set()
    for key, value in source.items():
        single = {key: value}
        if (key.startswith(_BACKBONE) or _convert_neck(single)
                or _convert_heads(single)):
            mapped.add(key)
    return mapped
