"""Reading, converting and loading EVA-01 checkpoints into :class:`EVAViT`.

Checkpoints reach eva_mm in three shapes: the official BAAI files (weights
under ``'model'`` or ``'module'``, fp16 when saved by DeepSpeed, a MIM
``lm_head``), timm ``eva_*`` models (a classifier ``head`` and optionally a
``fc_norm``) and OpenMMLab checkpoints of whole detectors or segmentors (the
backbone under ``'backbone.'``). :class:`EVAViT` uses the official EVA-01
parameter names, so converting is mostly dropping and casting; what remains is
telling the user precisely what does not fit, in one error, instead of
PyTorch's first-error-wins messages or mmengine's warnings that let a model
train from random weights.
"""
import argparse
import logging
import math
import os
import re
import zipfile
from collections import Counter
from typing import (TYPE_CHECKING, Dict, Iterable, List, Mapping,
                    NamedTuple, Optional, Sequence, Tuple, Union)

import torch
from mmengine.logging import print_log
from torch.nn.modules.utils import _pair

from eva_mm.models.layers.pos_embed import TargetSizes, fit_state_dict

if TYPE_CHECKING:
    from eva_mm.models.backbones.eva_vit import EVAViT

StateDict = Dict[str, torch.Tensor]
PathLike = Union[str, os.PathLike]
SizeLike = Union[int, Sequence[int]]

CONVERTER = 'tools/model_converters/convert_eva.py'

# Containers that wrap the weights: mmengine ('state_dict'), the official EVA
# / BEiT training code ('model', 'model_ema') and DeepSpeed ('module'). The raw
# weights win over the EMA copy when a file holds both.
_CONTAINER_KEYS = ('state_dict', 'model', 'module', 'model_ema')

# Every parameter name EVAViT can have; anything else in a converted file is
# a different architecture and must not be loaded silently.
_EVA01_KEY = re.compile(
    r'^(cls_token|mask_token|pos_embed'
    r'|patch_embed\.proj\.(weight|bias)'
    r'|blocks\.\d+\.(norm1|norm2)\.(weight|bias)'
    r'|blocks\.\d+\.attn\.(qkv\.weight|q_bias|v_bias|proj\.(weight|bias)'
    r'|rel_pos_h|rel_pos_w|relative_position_bias_table)'
    r'|blocks\.\d+\.mlp\.(fc1|fc2)\.(weight|bias)'
    r'|blocks\.\d+\.gamma_[12]'
    r'|(norm|fc_norm)\.(weight|bias))$')

# Parts of timm's EVA-02 (rotary embeddings, separate q/k/v, SwiGLU, sub-LN)
# that EVA-01 does not have.
_EVA02_KEY = re.compile(r'(^rope\.|\.attn\.[qkv]_proj\.|\.attn\.norm\.'
                        r'|\.mlp\.fc1_[gx]\.|\.mlp\.norm\.)')

# Parameters a plain pretrained checkpoint never holds because the task adds
# them: relative positions (zero-initialised), the MIM mask token, the pooled
# LayerNorm and layer scale. Missing, they keep the model's initialisation.
_FRESH_KEY = re.compile(
    r'^(mask_token|fc_norm\.(weight|bias)|blocks\.\d+\.gamma_[12]'
    r'|blocks\.\d+\.attn\.(rel_pos_h|rel_pos_w|relative_position_bias_table))$'
)

# Checkpoint entries a backbone may lack without harm when the model does not
# have them: heads, the unused mask token, norms of the other pooling, relative
# positions of another task, and BEiT's derived index buffers.
_UNUSED_KEY = re.compile(
    r'^(lm_head\.|head\.)|^(mask_token|pos_embed)$|^(norm|fc_norm)\.'
    r'|\.attn\.(rel_pos_h|rel_pos_w|relative_position_bias_table)$'
    r'|relative_position_index$')
_HEAD_KEY = re.compile(r'^(lm_head|head)\.')
_DERIVED_KEY = re.compile(r'relative_position_index$')
_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.')


class CheckpointError(RuntimeError):
    """A file that cannot be read or converted as an EVA-01 checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not fit the model."""


class LoadResult(NamedTuple):
    """What :func:`load_backbone_checkpoint` did besides loading.

    Attributes:
        initialised_fresh: Model parameters the checkpoint does not hold that
            keep their initialisation (e.g. zero relative position tables).
        ignored: Checkpoint entries the model does not use (e.g. ``lm_head``).
    """
    initialised_fresh: Tuple[str, ...]
    ignored: Tuple[str, ...]


def _shape(tensor: torch.Tensor) -> Tuple[int, ...]:
    return tuple(tensor.shape)


def rename_prefix(state_dict: Mapping[str, torch.Tensor], old: str,
                  new: str = '') -> StateDict:
    """The entries of ``state_dict`` under ``old``, moved under ``new``.

    Args:
        state_dict: Flat weights.
        old: The prefix to select, e.g. ``'backbone.net.'``.
        new: What replaces it, e.g. ``'backbone.'``; by default the prefix
            is stripped.

    Returns:
        A new dict with only the selected entries, renamed.
    """
    return {
        new + key[len(old):]: value
        for key, value in state_dict.items() if key.startswith(old)
    }


def select_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str,
                  source: str) -> StateDict:
    """The entries under ``prefix``, stripped of it; an error if none is.

    Args:
        state_dict: Flat weights.
        prefix: The prefix, e.g. ``'backbone.'``.
        source: Where the weights come from, for the error.

    Returns:
        The selected entries without the prefix.

    Raises:
        CheckpointMismatchError: If no key starts with ``prefix``; it lists
            the prefixes there are.
    """
    selected = rename_prefix(state_dict, prefix)
    if not selected:
        found = Counter(
            key.split('.', 1)[0] + '.' if '.' in key else key
            for key in state_dict)
        raise CheckpointMismatchError(
            f'No key of {source!r} starts with prefix {prefix!r}. The file '
            f'has these top-level prefixes (with key counts): '
            f'{dict(found.most_common(10))}. Set prefix to the backbone\'s '
            "(e.g. 'backbone.' for an mmdet/mmseg checkpoint) or leave it "
            'unset for a backbone-only file.')
    return selected


def to_fp32(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Floating-point tensors cast to fp32, the others as they are.

    Args:
        state_dict: Flat weights.

    Returns:
        A new dict.
    """
    # DeepSpeed saves fp16 weights; models and optimisers here start in fp32
    # and mixed precision casts at run time.
    return {
        key: value.float() if value.is_floating_point() else value
        for key, value in state_dict.items()
    }


def unwrap_state_dict(checkpoint: Mapping) -> StateDict:
    """Take the tensors out of the usual checkpoint containers.

    Descends through ``'state_dict'`` (mmengine), ``'model'`` (official EVA),
    ``'module'`` (DeepSpeed) and ``'model_ema'`` until the values are tensors,
    then strips the ``'module.'`` prefix that DistributedDataParallel adds.

    Args:
        checkpoint: What ``torch.load`` returned, or a state dict.

    Returns:
        A new flat dict of tensors.

    Raises:
        CheckpointError: If no dict of tensors is found.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f'Expected a dict of tensors, got a {type(checkpoint).__name__}.')
    state = checkpoint
    while True:
        inner = next((state[key] for key in _CONTAINER_KEYS
                      if isinstance(state.get(key), Mapping)), None)
        if inner is None:
            break
        state = inner
    not_tensors = [k for k, v in state.items() if not torch.is_tensor(v)]
    if not state or not_tensors:
        raise CheckpointError(
            'Found no state dict of tensors: the top-level keys are '
            f'{sorted(map(str, checkpoint))[:20]} and the weights are not '
            f'under any of {list(_CONTAINER_KEYS)}'
            + (f' (non-tensor entries: {sorted(not_tensors)[:20]})'
               if not_tensors else '') + '.')
    # DistributedDataParallel prefixes every key.
    if all(key.startswith('module.') for key in state):
        return rename_prefix(state, 'module.')
    return dict(state)


def _torch_load(path: str, mmap: bool) -> object:
    # Only zip-format files (torch >= 1.6) can be mapped.
    return torch.load(
        path,
        map_location='cpu',
        weights_only=True,
        mmap=mmap and zipfile.is_zipfile(path))


def load_state_dict_file(path: PathLike, mmap: bool = False) -> StateDict:
    """Read a checkpoint file as a flat state dict on the CPU.

    ``.safetensors`` files are read with safetensors, everything else
    (``.pth``, ``.pt``, ``.bin``) with ``torch.load(weights_only=True)``,
    which refuses to unpickle arbitrary Python objects: a checkpoint should
    never be able to run code.

    Args:
        path: The checkpoint file.
        mmap: Map the tensors' storage from the file instead of reading it
            (cheap when only names and shapes are needed); files in
            PyTorch's legacy format, which cannot be mapped, are read.

    Returns:
        The weights, unwrapped by :func:`unwrap_state_dict`.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        CheckpointError: If the file is not a checkpoint of tensors.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileNotFoundError(
            f'Checkpoint path {path!r} is a directory: give the weights file '
            'inside it (e.g. model.safetensors or pytorch_model.bin).')
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'No checkpoint file at {path!r}. Check the path (relative paths '
            f'start at {os.getcwd()!r}) or download the weights first; '
            f'official EVA and timm weights are converted with {CONVERTER}.')
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            checkpoint = load_file(path, device='cpu')
        else:
            # The official EVA training code saves its argparse arguments
            # next to the weights; a Namespace only holds attributes.
            with torch.serialization.safe_globals([argparse.Namespace]):
                checkpoint = _torch_load(path, mmap)
    # Readers fail in many ways (bad zip, bad pickle, refused global, bad
    # header); each means the same to the user: not a usable checkpoint.
    except Exception as err:
        raise CheckpointError(
            f'Could not read {path!r} as a checkpoint '
            f'({type(err).__name__}: {err})\n'
            'Give a .pth/.pt/.bin file saved with torch.save or a '
            '.safetensors file. Files are read with weights_only=True, so a '
            'file that also pickles Python objects (not just tensors, '
            'numbers, strings and containers) is refused: if you trust it, '
            're-save only its state dict, e.g. torch.save({"state_dict": '
            'model.state_dict()}, dst).') from err
    try:
        return unwrap_state_dict(checkpoint)
    except CheckpointError as err:
        raise CheckpointError(f'{path!r}: {err}') from None


def _check_eva01_keys(state_dict: Mapping[str, torch.Tensor],
                      src_format: str) -> None:
    eva02 = sorted(k for k in state_dict if _EVA02_KEY.search(k))
    if eva02:
        raise CheckpointError(
            f'This looks like an EVA-02 checkpoint ({len(eva02)} keys such '
            f'as {eva02[:4]}): convert it with --src-format timm-eva02 '
            '(timm eva02_* models) or official-eva02 (BAAI EVA-02 files), '
            'which fuse q/k/v and map the SwiGLU MLPs for an eva02-* '
            'EVAViT.')
    unknown = sorted(k for k in state_dict if not _EVA01_KEY.match(k))
    if not unknown:
        return
    hint = (f' Is --src-format {src_format} right for this file? The '
            "'official' format has the BAAI EVA-01 names "
            "(blocks.N.attn.qkv.weight, ...), 'timm' the names of timm's "
            'eva_* models.')
    nested = Counter(
        key.split('.', 1)[0] + '.' for key in unknown
        if '.' in key and _EVA01_KEY.match(key.split('.', 1)[1]))
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
        if not (_HEAD_KEY.match(key) or _DERIVED_KEY.search(key))
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
        if not (key.startswith('head.') or key.endswith('.attn.k_bias'))
    }
    _check_eva01_keys(weights, 'timm')
    return to_fp32(weights)


def to_image_classifier(backbone: Mapping[str, torch.Tensor],
                        source: Mapping) -> StateDict:
    """Weights of an mmpretrain ``ImageClassifier`` with a linear head.

    Official EVA-01 and timm classifiers keep their linear classifier as
    ``head.weight`` / ``head.bias``, which the backbone converters drop;
    mmpretrain's ``LinearClsHead`` names it ``head.fc``. The backbone goes
    under ``backbone.``.

    Args:
        backbone: Converted (and possibly resized) EVAViT weights.
        source: The original checkpoint, wrapped or not, holding the head.

    Returns:
        The classifier state dict.

    Raises:
        CheckpointError: If the source has no linear ``head``.
    """
    weights = unwrap_state_dict(source)
    missing = [k for k in ('head.weight', 'head.bias') if k not in weights]
    if missing:
        raise CheckpointError(
            f'The checkpoint has no classifier ({missing} missing): convert '
            'it as a backbone, without --classifier.')
    classifier = {f'backbone.{key}': value for key, value in backbone.items()}
    classifier['head.fc.weight'] = weights['head.weight']
    classifier['head.fc.bias'] = weights['head.bias']
    return to_fp32(classifier)


def resize_checkpoint(state_dict: Mapping[str, torch.Tensor],
                      patch_size: Optional[SizeLike] = None,
                      img_size: Optional[SizeLike] = None,
                      num_extra_tokens: int = 1) -> StateDict:
    """Resize the patch kernel and the position embedding of a checkpoint.

    The converters' entry to :func:`fit_state_dict`, the resizing path of
    the model, with the target model given by its sizes. The kernel is
    resized bicubically, as the official EVA ``interpolate_patch_14to16``
    script does to run the patch-14 model at patch 16 for detection and
    segmentation; the position grid becomes ``img_size // patch_size``.

    Args:
        state_dict: EVAViT weights.
        patch_size: The target patch size; ``None`` keeps the kernel's.
        img_size: The target image size; ``None`` keeps the grid.
        num_extra_tokens: Leading non-patch tokens (the cls token) in the
            checkpoint's ``pos_embed``; the result keeps them.

    Returns:
        A new dict with the resized tensors (the others are shared).

    Raises:
        ValueError: If a size is needed that the checkpoint does not give,
            or the position embedding is not a square grid.
    """
    weights = dict(state_dict)
    kernel = weights.get('patch_embed.proj.weight')
    if patch_size is None and img_size is not None:
        if kernel is None:
            raise ValueError('Give patch_size: the checkpoint has no patch '
                             'kernel to read it from.')
        patch_size = tuple(kernel.shape[-2:])
    kernel_shape = None
    if kernel is not None and patch_size is not None:
        kernel_shape = (*kernel.shape[:-2], *_pair(patch_size))
    pos_grid = None
    if img_size is not None:
        # The model floors the grid the same way (EVAViT.patch_resolution).
        pos_grid = tuple(
            size // patch
            for size, patch in zip(_pair(img_size), _pair(patch_size)))
    target = TargetSizes(
        kernel_shape=kernel_shape,
        pos_grid=pos_grid,
        with_cls_token=bool(num_extra_tokens))
    fit_state_dict(weights, target, src_extra_tokens=num_extra_tokens)
    pos_embed = weights.get('pos_embed')
    if pos_grid is not None and pos_embed is not None and \
            pos_embed.shape[1] != num_extra_tokens + math.prod(pos_grid):
        raise ValueError(
            f'pos_embed of shape {_shape(pos_embed)} does not hold a square '
            f'grid after {num_extra_tokens} extra token(s); pass the right '
            'num_extra_tokens.')
    return weights


def _block_count(keys: Iterable[str]) -> int:
    indexes = {int(m.group(1)) for m in map(_BLOCK_KEY.match, keys) if m}
    return max(indexes) + 1 if indexes else 0


def _mismatch_hints(model_shapes: Mapping[str, Tuple[int, ...]],
                    checkpoint: Mapping[str, torch.Tensor],
                    unexpected: Sequence[str], prefix: Optional[str],
                    has_mismatch: bool) -> List[str]:
    hints = []
    if unexpected and not prefix:
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
    if any(_EVA02_KEY.search(key) for key in unexpected):
        hints.append('Keys such as rope/q_proj/fc1_g are EVA-02\'s: build '
                     'EVAViT with an eva02-* arch, and convert raw EVA-02 '
                     'files first (--src-format official-eva02 or '
                     'timm-eva02).')
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
    hints.append(f'Convert and check official BAAI EVA-01 or timm eva_* '
                 f'weights with: python {CONVERTER} --src-format '
                 '{official,timm} SRC DST [--patch-size 16] '
                 '[--img-size 1024].')
    return hints


class KeyReport(NamedTuple):
    """How a checkpoint's weights match a model's.

    Attributes:
        missing: Model weights the checkpoint does not hold.
        mismatched: ``'key: checkpoint [shape] vs model [shape]'`` for
            weights held with another shape (they are not loaded either).
        unexpected: Checkpoint entries the model does not have.
        mismatched_keys: The keys of ``mismatched``.
    """
    missing: Tuple[str, ...]
    mismatched: Tuple[str, ...]
    unexpected: Tuple[str, ...]
    mismatched_keys: Tuple[str, ...] = ()

    @property
    def left_at_init(self) -> Tuple[str, ...]:
        """The model weights a load would leave at their initialisation."""
        return self.missing + self.mismatched_keys


def compare_with_model(model: torch.nn.Module,
                       checkpoint: Mapping[str, torch.Tensor]) -> KeyReport:
    """Compare a checkpoint's keys and shapes with a model's state dict.

    Args:
        model: The whole model (not a DDP or TTA wrapper around it).
        checkpoint: Flat weights, as :func:`load_state_dict_file` gives.

    Returns:
        The missing, mis-shaped and unexpected keys, sorted.
    """
    expected = {k: _shape(v) for k, v in model.state_dict().items()}
    given = {k: _shape(v) for k, v in checkpoint.items()}
    # BatchNorm's step counter only matters for momentum=None; mmengine's
    # loader ignores it too, and files saved without it are common.
    missing = (k for k in set(expected) - set(given)
               if not k.endswith('num_batches_tracked'))
    mismatched = tuple(
        key for key in sorted(set(given) & set(expected))
        if given[key] != expected[key])
    return KeyReport(
        missing=tuple(sorted(missing)),
        mismatched=tuple(
            f'{key}: checkpoint {list(given[key])} vs model '
            f'{list(expected[key])}' for key in mismatched),
        unexpected=tuple(sorted(set(given) - set(expected))),
        mismatched_keys=mismatched)


def read_backbone_checkpoint(path: str,
                             prefix: Optional[str] = None) -> StateDict:
    """Read a checkpoint's weights, those under ``prefix`` if given.

    Args:
        path: A checkpoint file (see :func:`load_state_dict_file`).
        prefix: Keep only the keys under this prefix, stripped of it.

    Returns:
        The flat weights.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        CheckpointError: If the file is not a checkpoint of tensors.
        CheckpointMismatchError: If no key is under ``prefix``.
    """
    checkpoint = load_state_dict_file(path)
    return select_prefix(checkpoint, prefix, path) if prefix else checkpoint


def adapt_to_model(model: 'EVAViT',
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
        key for key in checkpoint
        if key not in model_keys and _UNUSED_KEY.search(key)
    ]
    weights = {k: v for k, v in checkpoint.items() if k not in ignored}
    # The fit reads the cls token to know the checkpoint's cls position.
    fit_state_dict(weights, model.target_sizes)
    if 'cls_token' in weights and 'cls_token' not in model_keys:
        # Dense (ViTDet) models drop it; the fit dropped its position.
        del weights['cls_token']
        ignored.append('cls_token')
    return weights, sorted(ignored)


def _task_modules(model: 'EVAViT') -> Tuple[str, ...]:
    # Modules a backbone adds around the ViT (e.g. ViT-Adapter's) are never
    # in a pre-trained ViT file.
    return tuple(f'{name}.' for name in getattr(model, 'task_modules', ()))


def classify_keys(model: 'EVAViT',
                  weights: StateDict) -> Tuple[KeyReport, Tuple[str, ...]]:
    """Compare adapted weights with ``model``, sparing fresh parameters.

    Parameters a pretrained file never holds (relative positions,
    ``mask_token``, ``fc_norm``, layer scale, and the modules a subclass
    names in its ``task_modules``) are not missing: they keep their
    initialisation.

    Args:
        model: The EVAViT to load into.
        weights: Adapted weights (see :func:`adapt_to_model`).

    Returns:
        The comparison without the fresh keys, and the fresh keys.
    """
    report = compare_with_model(model, weights)
    task_modules = _task_modules(model)
    fresh = tuple(
        key for key in report.missing
        if _FRESH_KEY.match(key) or f'{key}.'.startswith(task_modules))
    return report._replace(
        missing=tuple(k for k in report.missing if k not in fresh)), fresh


def _mismatch_message(model: 'EVAViT', report: KeyReport,
                      original_shapes: Mapping[str, Tuple[int, ...]],
                      weights: StateDict, source: str,
                      prefix: Optional[str]) -> str:
    """One error naming every key that does not fit, and how to fix it."""
    model_shapes = {k: _shape(v) for k, v in model.state_dict().items()}
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
            bool(report.mismatched_keys))
    ]
    return '\n'.join(lines)


def _log_load(model: 'EVAViT', source: str, num_loaded: int,
              fresh: Sequence[str], ignored: Sequence[str]) -> None:
    task_modules = _task_modules(model)
    message = f'Loaded {num_loaded} tensors from {source}'
    if fresh:
        # One entry per task module rather than each of its parameters.
        named = sorted({
            next((m[:-1] for m in task_modules
                  if f'{key}.'.startswith(m)), key)
            for key in fresh
        })
        message += f'; initialised fresh: {", ".join(named)}'
    if ignored:
        message += f'; ignored: {", ".join(ignored)}'
    print_log(message, logger='current', level=logging.INFO)


def load_backbone_checkpoint(model: 'EVAViT',
                             path: PathLike,
                             prefix: Optional[str] = None) -> LoadResult:
    """Load a checkpoint into an :class:`EVAViT`, strictly but helpfully.

    Read (:func:`read_backbone_checkpoint`), adapt to the model
    (:func:`adapt_to_model`: unused entries dropped, sizes fitted by the
    model's resizing path), classify the keys (:func:`classify_keys`) and
    report: before anything is copied, every missing, unexpected and
    mis-shaped key is named in one :class:`CheckpointMismatchError`, so
    that a model never trains from partly random weights; parameters a
    pretrained file never holds keep their initialisation.

    Args:
        model: The EVAViT to load into.
        path: A checkpoint file (see :func:`load_state_dict_file`).
        prefix: Load only the keys starting with this prefix, stripped of it,
            e.g. ``'backbone.'`` for a detector checkpoint. A missing
            trailing dot is added.

    Returns:
        The keys initialised fresh and the checkpoint keys ignored.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        CheckpointError: If the file is not a checkpoint of tensors.
        CheckpointMismatchError: If the checkpoint does not fit the model.
    """
    path = os.fspath(path)
    if prefix and not prefix.endswith('.'):
        prefix += '.'
    source = f'{path!r}' + (f' (prefix {prefix!r})' if prefix else '')
    checkpoint = read_backbone_checkpoint(path, prefix)
    original_shapes = {key: _shape(value) for key, value in checkpoint.items()}
    weights, ignored = adapt_to_model(model, checkpoint)
    report, fresh = classify_keys(model, weights)
    if report.missing or report.unexpected or report.mismatched_keys:
        raise CheckpointMismatchError(
            _mismatch_message(model, report, original_shapes, weights,
                              source, prefix))
    model.load_state_dict(weights, strict=False)
    _log_load(model, source, len(weights), fresh, ignored)
    return LoadResult(fresh, tuple(ignored))


def check_whole_model_checkpoint(model: torch.nn.Module,
                                 path: PathLike,
                                 allow_partial: bool = False,
                                 option: str = '--allow-partial-load'
                                 ) -> KeyReport:
    """Refuse a checkpoint that would leave weights of ``model`` unloaded.

    mmengine's ``load_checkpoint`` (used by the Runner's ``load_from`` and by
    mmdet's / mmseg's ``init_model``) loads non-strictly and only warns, so
    an incomplete or mis-converted checkpoint evaluates random layers without
    an error. This compares the file's names and shapes (memory-mapped, not
    read) with the model first.

    Args:
        model: The whole model (not a DDP or TTA wrapper around it).
        path: The checkpoint file.
        allow_partial: Accept missing and mis-shaped weights (they keep
            their initialisation) and log which ones, instead of raising.
        option: How the user allows a partial load, named in the error.

    Returns:
        The comparison; unexpected entries alone are logged, not refused.

    Raises:
        CheckpointMismatchError: Weights would be left unloaded and
            ``allow_partial`` is False; it names every one of them.
    """
    path = os.fspath(path)
    report = compare_with_model(model, load_state_dict_file(path, mmap=True))
    left = report.left_at_init
    if left and not allow_partial:
        lines = [
            f'Checkpoint {path!r} leaves {len(left)} weight(s) of '
            f'{type(model).__name__} unloaded; they would keep their random '
            'initialisation.'
        ]
        if report.missing:
            lines.append(f'Missing in the checkpoint ({len(report.missing)}):')
            lines += [f'  {key}' for key in report.missing]
        if report.mismatched:
            lines.append(f'Shape mismatch ({len(report.mismatched)}):')
            lines += [f'  {line}' for line in report.mismatched]
        if report.unexpected:
            lines.append('Unexpected (in the checkpoint, not in the model) '
                         f'({len(report.unexpected)}):')
            lines += [f'  {key}' for key in report.unexpected]
        lines.append(
            'Use the checkpoint of this config\'s model (official EVA-01 '
            f'files are converted with {CONVERTER}, e.g. --src-format '
            f'official-seg), or pass {option} to run with those weights at '
            'their initialisation.')
        raise CheckpointMismatchError('\n'.join(lines))
    if left:
        print_log(
            f'Partial load ({option}): {len(left)} weight(s) of '
            f'{type(model).__name__} are not in {path!r} (or have another '
            f'shape) and are left at their initialisation: '
            f'{", ".join(left)}',
            logger='current',
            level=logging.WARNING)
    if report.unexpected:
        print_log(
            f'{path!r} has {len(report.unexpected)} entries the model does '
            f'not use: {", ".join(report.unexpected)}',
            logger='current',
            level=logging.WARNING)
    return report
