"""Loading checkpoints into :class:`EVAViT`, strictly but helpfully.

Read (:mod:`.reading`; a URL or model-zoo name is downloaded first,
:mod:`.sources`), convert an official file in memory when it needs it
(:mod:`.recognition`), adapt to the model (entries it does not use
dropped, sizes fitted by its own resizing path), compare key by key, and
report every missing, unexpected and mis-shaped key in one error before
anything is copied, instead of PyTorch's first-error-wins messages or
mmengine's warnings that let a model train from random weights.
"""
import logging
import os
import re
from collections import Counter
from typing import (Iterable, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple)

import torch
from mmengine.logging import print_log

from eva_mm.models.backbones.eva_vit import EVAViT
from eva_mm.models.layers.pos_embed import fit_state_dict
from eva_mm.registry import WEIGHT_INITIALIZERS
from .errors import CheckpointFormatError, CheckpointMismatchError
from .eva01 import DERIVED_KEY, EVA02_KEY, HEAD_KEY
from .model_check import compare_with_model
from .reading import PathLike, load_state_dict_file
from .recognition import (FormatChoice, choose_format, convert_in_memory,
                          unknown_format_hint)
from .sources import resolve_checkpoint
from .state_dict import KeyReport, StateDict, select_prefix

# Checkpoint entries besides heads and derived buffers that a backbone may
# lack without harm when the model does not have them: the unused mask
# token, norms of the other pooling, relative positions of another task.
_OPTIONAL_KEY = re.compile(
    r'^(mask_token|pos_embed)$|^(norm|fc_norm)\.'
    rf'|\.attn\.({"|".join(EVAViT.REL_POS_TABLES)})$')
_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.')
# How a user names the format of an init_cfg checkpoint, for messages.
FORMAT_OPTION = ("checkpoint_format=NAME in init_cfg (init_cfg=dict("
                 "type='Pretrained', checkpoint=..., checkpoint_format=NAME))")
# Where the whole-model formats put the backbone.
_BACKBONE_PREFIX = 'backbone.'


class LoadResult(NamedTuple):
    """What :func:`load_backbone_checkpoint` did besides loading.

    Attributes:
        initialised_fresh: Model parameters the checkpoint does not hold that
            keep their initialisation (e.g. zero relative position tables).
        ignored: Checkpoint entries the model does not use (e.g. ``lm_head``).
    """
    initialised_fresh: Tuple[str, ...]
    ignored: Tuple[str, ...]


def _block_count(keys: Iterable[str]) -> int:
    indexes = {int(m.group(1)) for m in map(_BLOCK_KEY.match, keys) if m}
    return max(indexes) + 1 if indexes else 0


def _mismatch_hints(model_shapes: Mapping[str, Tuple[int, ...]],
                    checkpoint: Mapping[str, torch.Tensor],
                    unexpected: Sequence[str], prefix: Optional[str],
                    has_mismatch: bool,
                    choice: Optional[FormatChoice],
                    format_hint: Optional[str] = None) -> List[str]:
    hints = []
    if unexpected and not prefix and choice is None:
        # A full detector file: "backbone.blocks.0..." would match once the
        # leading component is stripped.
        heads = Counter(
            key.split('.', 1)[0] + '.' for key in unexpected
            if '.' in key and key.split('.', 1)[1] in model_shapes)
        if heads:
            hints.append(f'The keys look like a full model\'s: set '
                         f'prefix={heads.most_common(1)[0][0]!r} (init_cfg='
                         'dict(type=\'Pretrained\', checkpoint=..., '
                         'prefix=...)).')
    if any(EVA02_KEY.search(key) for key in unexpected):
        hints.append('Keys such as rope/q_proj/fc1_g are EVA-02\'s: build '
                     'EVAViT with an eva02-* arch of the checkpoint\'s size.')
    ckpt_blocks, model_blocks = _block_count(checkpoint), _block_count(
        model_shapes)
    # Without any block the keys are foreign, not another size of EVA.
    if ckpt_blocks and (has_mismatch or ckpt_blocks != model_blocks):
        width = checkpoint.get('blocks.0.norm1.weight')
        ckpt_width = '?' if width is None else width.shape[0]
        model_width = model_shapes.get('blocks.0.norm1.weight', ('?', ))[0]
        hints.append(
            f'The checkpoint has {ckpt_blocks} blocks of width {ckpt_width}, '
            f'the model {model_blocks} of width {model_width}: build EVAViT '
            'with the checkpoint\'s arch (embed_dims, num_layers, num_heads, '
            'mlp_hidden_dim) and its pooling (final_norm / use_fc_norm).')
    if choice is None:
        hints.append(format_hint or unknown_format_hint(FORMAT_OPTION))
    else:
        hints.append(f'It was read in the {choice.name} layout '
                     f'({choice.reason}); if that is not what the file is, '
                     f'name its format with {FORMAT_OPTION}.')
    return hints


def adapt_to_model(model: EVAViT,
                   checkpoint: StateDict) -> Tuple[StateDict, List[str]]:
    """Drop the entries ``model`` does not use and fit the rest to its sizes.

    Unused entries are heads, the unused ``mask_token``, norms and relative
    position tables the model lacks, BEiT's index buffers, and the cls token
    of a model without one. Sizes are fitted by the model's own resizing
    path, :func:`~eva_mm.models.layers.pos_embed.fit_state_dict`.

    Args:
        model: The EVAViT to load into.
        checkpoint: Its flat weights.

    Returns:
        The adapted weights (a new dict) and the dropped keys, sorted.
    """
    model_keys = set(model.state_dict())
    ignored = [
        key for key in checkpoint if key not in model_keys and (
            HEAD_KEY.match(key) or DERIVED_KEY.search(key)
            or _OPTIONAL_KEY.search(key))
    ]
    weights = {k: v for k, v in checkpoint.items() if k not in ignored}
    # The fit reads the cls token to know the checkpoint's cls position.
    fit_state_dict(weights, model.target_sizes)
    if 'cls_token' in weights and 'cls_token' not in model_keys:
        # Dense (ViTDet) models drop it; the fit dropped its position.
        del weights['cls_token']
        ignored.append('cls_token')
    return weights, sorted(ignored)


def classify_keys(model: EVAViT,
                  weights: StateDict) -> Tuple[KeyReport, Tuple[str, ...]]:
    """Compare adapted weights with ``model``, sparing fresh parameters.

    The parameters the model declares a pretrained file never holds
    (:meth:`EVAViT.fresh_keys`: relative positions, ``mask_token``,
    ``fc_norm``, layer scale and the modules a subclass names in its
    ``task_modules``) are not missing: they keep their initialisation.

    Args:
        model: The EVAViT to load into.
        weights: Adapted weights (see :func:`adapt_to_model`).

    Returns:
        The comparison without the fresh keys, and the fresh keys.
    """
    report = compare_with_model(model, weights)
    declared = model.fresh_keys()
    fresh = tuple(key for key in report.missing if key in declared)
    return report._replace(
        missing=tuple(k for k in report.missing if k not in fresh)), fresh


def _mismatch_message(model: EVAViT, report: KeyReport,
                      original_shapes: Mapping[str, Tuple[int, ...]],
                      weights: StateDict, source: str,
                      prefix: Optional[str],
                      choice: Optional[FormatChoice],
                      format_hint: Optional[str] = None) -> str:
    """One error naming every key that does not fit, and how to fix it
    (``format_hint``: what to say of the file's format when none was
    chosen, by default that no format recognises it)."""
    model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    lines = [
        f'Checkpoint {source} does not fit {type(model).__name__}: '
        f'{len(report.missing)} missing, {len(report.unexpected)} unexpected '
        f'and {len(report.mismatched_keys)} mis-shaped key(s).'
    ]
    if report.missing:
        lines.append('Missing in the checkpoint:')
        lines += [f'  {key} {list(model_shapes[key])}'
                  for key in report.missing]
    if report.unexpected:
        lines.append('Unexpected (not in the model):')
        lines += [f'  {key} {list(original_shapes[key])}'
                  for key in report.unexpected]
    if report.mismatched_keys:
        lines.append('Shape mismatch (checkpoint vs model):')
        lines += [
            f'  {key}: {list(original_shapes[key])} vs '
            f'{list(model_shapes[key])}' for key in report.mismatched_keys
        ]
    lines.append('How to fix:')
    lines += [
        f'  - {hint}' for hint in _mismatch_hints(
            model_shapes, weights, report.unexpected, prefix,
            bool(report.mismatched_keys), choice, format_hint)
    ]
    return '\n'.join(lines)


def _log_load(model: EVAViT, source: str, num_loaded: int,
              fresh: Sequence[str], ignored: Sequence[str]) -> None:
    message = f'Loaded {num_loaded} tensors from {source}'
    if fresh:
        # One entry per task module rather than each of its parameters.
        named = sorted({
            key.split('.', 1)[0]
            if key.split('.', 1)[0] in model.task_modules else key
            for key in fresh
        })
        message += f'; initialised fresh: {", ".join(named)}'
    if ignored:
        message += f'; ignored: {", ".join(ignored)}'
    print_log(message, logger='current', level=logging.INFO)


class _Fit(NamedTuple):
    """Weights adapted to a model, and how they compare with it."""
    original_shapes: Mapping[str, Tuple[int, ...]]
    weights: StateDict
    ignored: List[str]
    report: KeyReport
    fresh: Tuple[str, ...]


def _fit(model: EVAViT, checkpoint: StateDict) -> _Fit:
    original_shapes = {
        key: tuple(value.shape)
        for key, value in checkpoint.items()
    }
    weights, ignored = adapt_to_model(model, checkpoint)
    report, fresh = classify_keys(model, weights)
    return _Fit(original_shapes, weights, ignored, report, fresh)


def _converted_backbone(model: EVAViT, full: StateDict,
                        choice: FormatChoice, source: str) -> StateDict:
    """A file's backbone weights, converted in ``choice``'s format."""
    # The model's sizes, as convert_eva.py --patch-size/--img-size would
    # give them (the detection formats need the image size); an EVA-CLIP
    # file gives its vision tower.
    conversion = convert_in_memory(
        full, choice, source, patch_size=model.patch_size,
        img_size=model.img_size, vision_only=True)
    weights = conversion.state_dict
    # Detectors, segmentors, recognizers and classifiers keep the ViT here.
    if any(key.startswith(_BACKBONE_PREFIX) for key in weights):
        return select_prefix(weights, _BACKBONE_PREFIX, source)
    return weights


def load_backbone_checkpoint(model: EVAViT,
                             path: PathLike,
                             prefix: Optional[str] = None,
                             checkpoint_format: Optional[str] = None
                             ) -> LoadResult:
    """Load a checkpoint into an :class:`EVAViT`, strictly but helpfully.

    Read (a URL or model-zoo name downloaded first), in eva_mm's layout or,
    converted in memory, in a released one
    (:func:`~eva_mm.checkpoints.recognition.choose_format`), adapt to the
    model (:func:`adapt_to_model`: unused entries dropped, sizes fitted by
    the model's resizing path), classify the keys (:func:`classify_keys`)
    and report: before anything is copied, every missing, unexpected and
    mis-shaped key is named in one :class:`CheckpointMismatchError`, so
    that a model never trains from partly random weights; parameters a
    pretrained file never holds keep their initialisation.

    Args:
        model: The EVAViT to load into.
        path: A checkpoint file, an ``http(s)://`` URL or a model-zoo name.
        prefix: Load only the keys starting with this prefix, stripped of it,
            e.g. ``'backbone.'`` for a detector checkpoint in eva_mm's
            layout. A missing trailing dot is added. A converted file gives
            its backbone (``backbone.`` of a whole model) without it.
        checkpoint_format: The registered format the file is in; by default
            its model-zoo entry's, else the one that recognises it when it
            does not fit as it is.

    Returns:
        The keys initialised fresh and the checkpoint keys ignored.

    Raises:
        FileNotFoundError: If ``path`` is no file, URL or zoo name.
        CheckpointError: If the file is not a checkpoint of tensors, cannot
            be downloaded, or is refused by its format.
        CheckpointMismatchError: If the checkpoint does not fit the model.
    """
    spec = os.fspath(path)
    if prefix and not prefix.endswith('.'):
        prefix += '.'
    checkpoint_source = resolve_checkpoint(spec)
    source = f'{spec!r}' + (f' (prefix {prefix!r})' if prefix else '')
    full = load_state_dict_file(checkpoint_source.path)
    fit, no_prefix = None, None
    try:
        checkpoint = select_prefix(full, prefix, spec) if prefix else full
        fit = _fit(model, checkpoint)
    except CheckpointMismatchError as err:
        # Nothing under the prefix: foreign unless a format reads it.
        no_prefix = err
    try:
        choice = choose_format(
            full, f'{spec!r}', FORMAT_OPTION, checkpoint_format,
            checkpoint_source.model,
            lambda: fit is None or bool(fit.report.unexpected))
    except CheckpointFormatError as ambiguous:
        if fit is None or checkpoint_format is not None:
            raise
        # In the model's own names (EVA-01's, which two formats share) but
        # not fitting, e.g. another depth: what does not fit is the error.
        raise CheckpointMismatchError(
            _mismatch_message(model, fit.report, fit.original_shapes,
                              fit.weights, source, prefix, None,
                              f'If it is a released file: {ambiguous}')
        ) from None
    if choice is not None:
        fit = _fit(model, _converted_backbone(model, full, choice, source))
    elif no_prefix is not None:
        raise no_prefix
    if not fit.report.fits:
        raise CheckpointMismatchError(
            _mismatch_message(model, fit.report, fit.original_shapes,
                              fit.weights, source, prefix, choice))
    model.load_state_dict(fit.weights, strict=False)
    _log_load(model, source, len(fit.weights), fit.fresh, fit.ignored)
    return LoadResult(fit.fresh, tuple(fit.ignored))


@WEIGHT_INITIALIZERS.register_module(name='PretrainedBackbone')
class PretrainedBackboneInit:
    """``init_cfg=dict(type='Pretrained', ...)`` of :class:`EVAViT`.

    mmengine's ``Pretrained`` loads non-strictly; EVAViT builds this
    initializer instead (see :meth:`EVAViT.init_weights`), which loads
    through :func:`load_backbone_checkpoint`.

    Args:
        checkpoint: The checkpoint file, ``http(s)://`` URL or model-zoo
            name.
        prefix: Load only the keys under this prefix (e.g. ``'backbone.'``).
        map_location: Taken for the signature of mmengine's ``Pretrained``;
            the file is read on the CPU and copied into the model wherever
            it is, which gives the same weights for any value.
        checkpoint_format: The registered format of the file, where it
            cannot be recognised (see :func:`load_backbone_checkpoint`).
    """

    def __init__(self,
                 checkpoint: PathLike,
                 prefix: Optional[str] = None,
                 map_location: Optional[str] = None,
                 checkpoint_format: Optional[str] = None) -> None:
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.checkpoint_format = checkpoint_format

    def __call__(self, module: EVAViT) -> None:
        """Load the checkpoint into ``module``."""
        load_backbone_checkpoint(module, self.checkpoint, prefix=self.prefix,
                                 checkpoint_format=self.checkpoint_format)
