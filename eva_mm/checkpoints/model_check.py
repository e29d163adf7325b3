"""Whole-model checks: refuse a checkpoint that leaves weights unloaded."""
import logging
import os
from typing import Optional

import torch
from mmengine.logging import print_log

from .errors import CheckpointMismatchError
from .reading import PathLike, load_state_dict_file
from .state_dict import KeyReport, StateDict, compare_state_dicts


def compare_with_model(model: torch.nn.Module,
                       checkpoint: StateDict) -> KeyReport:
    """Compare a checkpoint's keys and shapes with a model's state dict.

    Args:
        model: The whole model (not a DDP or TTA wrapper around it).
        checkpoint: Flat weights, as
            :func:`~eva_mm.checkpoints.reading.load_state_dict_file` gives.

    Returns:
        The missing, mis-shaped and unexpected keys, sorted.
    """
    return compare_state_dicts(model.state_dict(), checkpoint)


def check_whole_model_checkpoint(model: torch.nn.Module,
                                 path: PathLike,
                                 allow_partial: bool = False,
                                 option: str = '--allow-partial-load',
                                 note: Optional[str] = None) -> KeyReport:
    """Refuse a checkpoint file that would leave weights of ``model``
    unloaded.

    The file's names and shapes are memory-mapped, not read; see
    :func:`check_whole_model_weights`.

    Args:
        model: The whole model (not a DDP or TTA wrapper around it).
        path: The checkpoint file, in the model's layout.
        allow_partial: See :func:`check_whole_model_weights`.
        option: See :func:`check_whole_model_weights`.
        note: See :func:`check_whole_model_weights`.

    Returns:
        The comparison; unexpected entries alone are logged, not refused.

    Raises:
        CheckpointMismatchError: See :func:`check_whole_model_weights`.
    """
    path = os.fspath(path)
    return check_whole_model_weights(
        model, load_state_dict_file(path, mmap=True), repr(path),
        allow_partial, option, note)


def check_whole_model_weights(model: torch.nn.Module,
                              weights: StateDict,
                              source: str,
                              allow_partial: bool = False,
                              option: str = '--allow-partial-load',
                              note: Optional[str] = None) -> KeyReport:
    """Refuse weights that would leave weights of ``model`` unloaded.

    mmengine's ``load_checkpoint`` (used by the Runner's ``load_from`` and by
    mmdet's / mmseg's ``init_model``) loads non-strictly and only warns, so
    an incomplete or mis-converted checkpoint evaluates random layers without
    an error. This compares the names and shapes with the model first.

    Args:
        model: The whole model (not a DDP or TTA wrapper around it).
        weights: The flat weights to load (a file's, or converted).
        source: Where they come from, for messages.
        allow_partial: Accept missing and mis-shaped weights (they keep
            their initialisation) and log which ones, instead of raising.
        option: How the user allows a partial load, named in the error.
        note: A sentence for the error about the file's format (that it
            was converted, or that no format recognised it).

    Returns:
        The comparison; unexpected entries alone are logged, not refused.

    Raises:
        CheckpointMismatchError: Weights would be left unloaded and
            ``allow_partial`` is False; it names every one of them.
    """
    report = compare_with_model(model, weights)
    left = report.left_at_init
    if left and not allow_partial:
        lines = [
            f'Checkpoint {source} leaves {len(left)} weight(s) of '
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
        if note:
            lines.append(note)
        lines.append(
            "Use the checkpoint of this config's model (same size, class "
            f'count and variant), or pass {option} to run with those '
            'weights at their initialisation.')
        raise CheckpointMismatchError('\n'.join(lines))
    if left:
        print_log(
            f'Partial load ({option}): {len(left)} weight(s) of '
            f'{type(model).__name__} are not in {source} (or have another '
            f'shape) and are left at their initialisation: '
            f'{", ".join(left)}',
            logger='current',
            level=logging.WARNING)
    if report.unexpected:
        print_log(
            f'{source} has {len(report.unexpected)} entries the model does '
            f'not use: {", ".join(report.unexpected)}',
            logger='current',
            level=logging.WARNING)
    return report
