"""Official files loaded as they are: their format found, converted in memory.

Every entry point that loads weights (``tools/test.py``, ``load_from``,
``init_cfg=dict(type='Pretrained')`` of :class:`~eva_mm.models.EVAViT`,
:func:`eva_mm.apis.init_model`, ``tools/image_demo.py``) decides here how
to read a file (:func:`choose_format`):

1. in the format named for it: by the user (``--checkpoint-format``,
   ``checkpoint_format``), or by the model-zoo entry of the file;
2. else, when the file holds names the model does not have, in the format
   that recognises its keys (each registered format says whether a state
   dict is its layout, :class:`~eva_mm.checkpoints.registry.SourceFormat`);
   several formats recognising it is an error naming them and the option
   that names one;
3. else as it is: eva_mm's own checkpoints load exactly as they always did,
   and a file of no known layout meets the loaders' strict checks, whose
   error then says that no format recognised it
   (:func:`unknown_format_hint`).

A chosen format converts the file in memory (:func:`convert_in_memory`),
with the sizes the target model runs at, and logs which format it was and
what was dropped.
"""
import logging
from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log

from .errors import CONVERTER, CheckpointFormatError
from .registry import (Conversion, format_arguments, recognised_formats,
                       registered_formats)
from .state_dict import StateDict
from .zoo import ModelInfo


@dataclass(frozen=True)
class FormatChoice:
    """The format a file is read in, and why.

    Attributes:
        name: The registered format.
        reason: How it was chosen, for the log.
        options: Converter options (a zoo entry's ``Args``).
    """
    name: str
    reason: str
    options: Tuple[str, ...] = ()


def check_format_name(name: str, option: str) -> None:
    """Refuse a format name that is not registered.

    Args:
        name: The name given.
        option: How the user gave it, for the message.

    Raises:
        CheckpointFormatError: Naming the registered formats.
    """
    if name not in registered_formats():
        raise CheckpointFormatError(
            f'{option}: no checkpoint format {name!r}; the formats are '
            f'{", ".join(sorted(registered_formats()))}.')


def choose_format(state_dict: Mapping[str, torch.Tensor],
                  source: str,
                  option: str,
                  checkpoint_format: Optional[str] = None,
                  model: Optional[ModelInfo] = None,
                  has_foreign_keys: Callable[[], bool] = lambda: True
                  ) -> Optional[FormatChoice]:
    """The format to read a file in; ``None`` to load it as it is.

    Args:
        state_dict: The file's flat weights (names and shapes are read).
        source: The file, for messages.
        option: How the user names a format at this entry point (e.g.
            ``'--checkpoint-format NAME'``), for messages.
        checkpoint_format: The format the user named.
        model: The file's model-zoo entry, whose ``Src Format`` it is in.
        has_foreign_keys: Whether the file holds names the target model
            does not have (asked only of a file some format recognises).

    Returns:
        The choice (see the module doc).

    Raises:
        CheckpointFormatError: For an unknown ``checkpoint_format``, or a
            file with foreign names that several formats recognise.
    """
    if checkpoint_format is not None:
        check_format_name(checkpoint_format, option)
        return FormatChoice(checkpoint_format, f'named by {option}')
    if model is not None:
        return FormatChoice(model.src_format,
                            f'the model-zoo entry {model.name}',
                            model.converter_args)
    candidates = recognised_formats(state_dict)
    if not candidates or not has_foreign_keys():
        return None
    if len(candidates) > 1:
        raise CheckpointFormatError(
            f'{source} is in the layout of several checkpoint formats, '
            f'{", ".join(candidates)}, which its names cannot tell apart: '
            f'name the one it is with {option}.')
    return FormatChoice(candidates[0], 'recognised from its keys')


def unknown_format_hint(option: str) -> str:
    """The advice for a file that does not fit the model and is in no
    registered format's layout.

    Args:
        option: How the user names a format at this entry point.

    Returns:
        One sentence.
    """
    return ('If it is a released file: no registered checkpoint format '
            f'recognises its names ({", ".join(sorted(registered_formats()))}'
            f'; python {CONVERTER} --help says which files each reads); name '
            f'its format with {option} if it is one of them.')


def convert_in_memory(state_dict: Mapping[str, torch.Tensor],
                      choice: FormatChoice,
                      source: str,
                      log: bool = True,
                      **values: object) -> Conversion:
    """Convert a file's weights in the chosen format, and log it.

    Args:
        state_dict: The file's flat weights (meta tensors give the names and
            shapes of the result).
        choice: See :func:`choose_format`.
        source: The file, for the log.
        log: Log the format and what was dropped.
        **values: What the format reads besides ``choice.options``, as the
            converter tool's options would give it: ``img_size``,
            ``patch_size``, ``vision_only``, ``classifier``, or
            ``target_config``, the config of the model to load into, which
            the detection formats read the image size from.

    Returns:
        The conversion.

    Raises:
        CheckpointError: The format refuses the file (with the reason).
    """
    args = format_arguments(choice.options, **values)
    conversion = registered_formats()[choice.name].convert(
        dict(state_dict), args)
    if not log:
        return conversion
    lines = [
        f'{source}: {choice.name} layout ({choice.reason}), converted in '
        f'memory to {len(conversion.state_dict)} tensors'
    ]
    lines += [f'  {line}' for line in conversion.report]
    if conversion.dropped:
        lines.append(f'  dropped {len(conversion.dropped)} key(s) without a '
                     f'counterpart: {", ".join(sorted(conversion.dropped))}')
    print_log('\n'.join(lines), logger='current', level=logging.INFO)
    return conversion


class ModelWeights(NamedTuple):
    """A file's weights for a whole model.

    Attributes:
        state_dict: The weights to load: the file's, or converted.
        conversion: The conversion, ``None`` for the file as it is.
        note: A sentence about the format for the error of the strict
            check (``check_whole_model_weights`` of
            :mod:`eva_mm.checkpoints.model_check`), empty when there is
            nothing to say.
    """
    state_dict: StateDict
    conversion: Optional[Conversion]
    note: str


def convert_for_model(state_dict: Mapping[str, torch.Tensor],
                      model_state: Callable[[], Mapping[str, torch.Tensor]],
                      source: str,
                      option: str,
                      checkpoint_format: Optional[str] = None,
                      model: Optional[ModelInfo] = None,
                      config: Optional[object] = None,
                      log: bool = True) -> ModelWeights:
    """A file's weights for a whole model, converted if they need it.

    Args:
        state_dict: The file's flat weights.
        model_state: Returns the state dict of the model to load into (its
            names and shapes are read; e.g. a meta-device build), called
            only if some format could apply.
        source: The file, for messages.
        option: See :func:`choose_format`.
        checkpoint_format: See :func:`choose_format`.
        model: See :func:`choose_format`.
        config: The config of the model, for the sizes a format reads.
        log: See :func:`convert_in_memory`.

    Returns:
        The weights to load.

    Raises:
        CheckpointError: See :func:`choose_format` and
            :func:`convert_in_memory`.
    """
    expected: Sequence[str] = ()

    def model_keys() -> Sequence[str]:
        nonlocal expected
        expected = expected or tuple(model_state())
        return expected

    def has_foreign_keys() -> bool:
        return not set(state_dict) <= set(model_keys())

    choice = choose_format(state_dict, source, option, checkpoint_format,
                           model, has_foreign_keys)
    if choice is None:
        # Said without asking the model (which init_model would build for
        # it): a recognised file without foreign names fits.
        note = '' if recognised_formats(state_dict) else \
            unknown_format_hint(option)
        return ModelWeights(dict(state_dict), None, note)
    # The backbone formats' one whole model is mmpretrain's classifier.
    conversion = convert_in_memory(
        state_dict, choice, source, log, target_config=config,
        classifier='head.fc.weight' in model_keys())
    return ModelWeights(
        conversion.state_dict, conversion,
        f'They were converted from the {choice.name} layout '
        f'({choice.reason}); if the file is in another, name its format '
        f'with {option}.')


def replace_weights(checkpoint: dict, weights: StateDict) -> None:
    """Put converted weights where mmengine's loaders read them.

    Args:
        checkpoint: What was read from the file, changed in place.
        weights: The converted weights.
    """
    # Whatever else the official file holds (its containers, the training
    # script's arguments) would keep the unconverted tensors alive.
    checkpoint.clear()
    checkpoint['state_dict'] = weights
