"""Operations on flat state dicts that every loader and converter shares.

Selecting and renaming by prefix, the fp32 cast, the check that a source
has the keys of its kind and the key-by-key comparison with a model are
defined here once; the loaders (``loading.py``, ``model_check.py``) and
every converter family (``converters/``) call them.
"""
from collections import Counter
from typing import Dict, List, Mapping, NamedTuple, Sequence, Tuple

import torch

from .errors import CheckpointError, CheckpointMismatchError

StateDict = Dict[str, torch.Tensor]


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
    # DeepSpeed saves fp16/bf16 weights; models and optimisers here start
    # in fp32 and mixed precision casts at run time.
    return {
        key: value.float() if value.is_floating_point() else value
        for key, value in state_dict.items()
    }


def absent_keys(state_dict: Mapping[str, torch.Tensor],
                keys: Sequence[str]) -> List[str]:
    """The keys of a kind of file that ``state_dict`` lacks.

    Args:
        state_dict: The source weights.
        keys: Keys, or key prefixes ending in ``'.'`` or ``'_'``, that a
            file of this kind always has.

    Returns:
        Those of ``keys`` that no entry is (or, for a prefix, starts with).
    """
    return [
        key for key in keys
        if not (key in state_dict or (key.endswith(('.', '_')) and any(
            name.startswith(key) for name in state_dict)))
    ]


def require_keys(state_dict: Mapping[str, torch.Tensor],
                 keys: Sequence[str], what: str, fix: str) -> None:
    """Raise one clear error when a source lacks the keys of its kind.

    Args:
        state_dict: The source weights.
        keys: Keys, or key prefixes ending in ``'.'`` or ``'_'``, that a
            file of this kind always has.
        what: The kind of file expected, e.g. ``'an EVA-01 detectron2
            detector'``.
        fix: What to do instead, e.g. which ``--src-format`` fits.

    Raises:
        CheckpointError: If any of ``keys`` is absent.
    """
    absent = absent_keys(state_dict, keys)
    if absent:
        prefixes = sorted({name.split('.', 1)[0] for name in state_dict})
        raise CheckpointError(
            f'This is not {what}: it lacks {absent} (its top-level names are '
            f'{prefixes[:12]}). {fix}')


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

    @property
    def fits(self) -> bool:
        """Whether a strict load would take every entry as it is."""
        return not (self.missing or self.unexpected or self.mismatched_keys)


def compare_state_dicts(expected: Mapping[str, torch.Tensor],
                        given: Mapping[str, torch.Tensor]) -> KeyReport:
    """Compare a checkpoint's keys and shapes with a model's.

    Args:
        expected: The model's state dict (its tensors may be on the meta
            device: only shapes are read).
        given: The checkpoint's flat weights.

    Returns:
        The missing, mis-shaped and unexpected keys, sorted.
    """
    expected_shapes = {k: tuple(v.shape) for k, v in expected.items()}
    given_shapes = {k: tuple(v.shape) for k, v in given.items()}
    # BatchNorm's step counter only matters for momentum=None; mmengine's
    # loader ignores it too, and BatchNorm fills it in when a plain dict
    # lacks it.
    missing = (k for k in set(expected_shapes) - set(given_shapes)
               if not k.endswith('num_batches_tracked'))
    mismatched = tuple(
        key for key in sorted(set(given_shapes) & set(expected_shapes))
        if given_shapes[key] != expected_shapes[key])
    return KeyReport(
        missing=tuple(sorted(missing)),
        mismatched=tuple(
            f'{key}: checkpoint {list(given_shapes[key])} vs model '
            f'{list(expected_shapes[key])}' for key in mismatched),
        unexpected=tuple(sorted(set(given_shapes) - set(expected_shapes))),
        mismatched_keys=mismatched)
