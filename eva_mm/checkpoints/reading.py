"""Reading checkpoint files into flat state dicts on the CPU.

Checkpoints reach eva_mm in three shapes: the official BAAI files (weights
under ``'model'`` or ``'module'``, fp16 when saved by DeepSpeed, the
training script's settings beside them), timm / open_clip state dicts and
OpenMMLab checkpoints (``'state_dict'`` and ``'meta'``). Every one is read
with ``torch.load(weights_only=True)`` or safetensors, so that a file can
never run code, and unwrapped to the flat dict of tensors.
"""
import argparse
import os
import zipfile
from collections import OrderedDict
from typing import Mapping, Union

import torch

from .errors import CONVERTER, CheckpointError
from .state_dict import StateDict, rename_prefix

PathLike = Union[str, os.PathLike]

# Containers that wrap the weights: mmengine ('state_dict'), the official EVA
# / BEiT training code ('model', 'model_ema') and DeepSpeed ('module'). The raw
# weights win over the EMA copy when a file holds both.
_CONTAINER_KEYS = ('state_dict', 'model', 'module', 'model_ema')

# What the official training scripts save beside the weights, allowed for
# weights_only loads:
# - the image code's argparse arguments (a Namespace only holds
#   attributes);
# - the video code's whole yacs config (EVA-01/video/utils/tools.py:49-57,
#   ``'config': config``, a ``yacs.config.CfgNode``, which is a dict
#   subclass). Its pickle name is mapped to a plain OrderedDict, which takes
#   the node's items and its four flags (``__immutable__`` and the like,
#   set as attributes) and can run nothing else: yacs need not be installed
#   and no other name of it is allowed.
_TRAINING_SCRIPT_GLOBALS = (argparse.Namespace,
                            (OrderedDict, 'yacs.config.CfgNode'))


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


def _torch_load(path: str, map_location: object, mmap: bool) -> object:
    # Only zip-format files (torch >= 1.6) can be mapped.
    return torch.load(
        path,
        map_location=map_location,
        weights_only=True,
        mmap=mmap and zipfile.is_zipfile(path))


def register_training_script_globals() -> None:
    """Allow what the official training scripts save beside the weights in
    every ``weights_only`` load of this process, mmengine's included.

    :func:`read_checkpoint` allows them for its own reads only; mmengine's
    ``load_checkpoint`` of a local file (``load_from``, ``init_cfg``
    of other modules) calls ``torch.load`` itself. Safe to call more than
    once.
    """
    torch.serialization.add_safe_globals(list(_TRAINING_SCRIPT_GLOBALS))


def read_checkpoint(path: PathLike,
                    map_location: object = 'cpu',
                    mmap: bool = False) -> object:
    """Read a checkpoint file as it was saved, never running code.

    ``.safetensors`` files are read with safetensors, everything else
    (``.pth``, ``.pt``, ``.bin``) with ``torch.load(weights_only=True)``,
    which refuses to unpickle arbitrary Python objects: a checkpoint should
    never be able to run code.

    Args:
        path: The checkpoint file.
        map_location: As for ``torch.load`` (safetensors files are read on
            the CPU).
        mmap: Map the tensors' storage from the file instead of reading it
            (cheap when only names and shapes are needed); files in
            PyTorch's legacy format, which cannot be mapped, are read.

    Returns:
        What was saved: a state dict, or a dict holding one.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        CheckpointError: If the file cannot be read as a checkpoint.
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
            return load_file(path, device='cpu')
        with torch.serialization.safe_globals(list(_TRAINING_SCRIPT_GLOBALS)):
            return _torch_load(path, map_location, mmap)
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


def load_state_dict_file(path: PathLike, mmap: bool = False) -> StateDict:
    """Read a checkpoint file as a flat state dict on the CPU.

    Args:
        path: The checkpoint file (see :func:`read_checkpoint`).
        mmap: See :func:`read_checkpoint`.

    Returns:
        The weights, unwrapped by :func:`unwrap_state_dict`.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        CheckpointError: If the file is not a checkpoint of tensors.
    """
    path = os.fspath(path)
    checkpoint = read_checkpoint(path, mmap=mmap)
    try:
        return unwrap_state_dict(checkpoint)
    except CheckpointError as err:
        raise CheckpointError(f'{path!r}: {err}') from None
