"""The command-line tools' shared set-up: common arguments, config loading
with ``--cfg-options`` checks, ``--amp``, and a runner adapted to the
hardware at hand that loads ``load_from`` from a file, a URL or a model-zoo
name, in eva_mm's layout or a released one (tools/train.py,
tools/test.py)."""
import argparse
import difflib
import os
import os.path as osp
from typing import Iterable, List

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from eva_mm.checkpoints.download import check_checkpoint_file
from eva_mm.checkpoints.model_check import check_whole_model_weights
from eva_mm.checkpoints.reading import load_state_dict_file
from eva_mm.checkpoints.recognition import convert_for_model
from eva_mm.checkpoints.registry import meta_model
from eva_mm.checkpoints.sources import (checkpoint_location, is_url,
                                        require_whole_model,
                                        resolve_checkpoint)
from .hooks.official_checkpoint import FORMAT_OPTION, bare_model
from .safe_checkpoint import setup_checkpoint_loading


def prepare_distributed(cfg: Config) -> None:
    """Make ``--launcher pytorch`` work on a machine without GPUs.

    mmengine 0.10.7 calls ``torch.cuda.set_device`` before initialising the
    process group and wraps the model with ``device_ids=[LOCAL_RANK]``; both
    fail without a GPU. On CPU this initialises the group with gloo (the
    Runner then skips its own initialisation) and wraps without device ids.
    On GPU it changes nothing.

    Args:
        cfg: The config, with ``cfg.launcher`` set.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel')
    wrapper.setdefault('device_ids', None)
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper


def finish_distributed() -> None:
    """Leave the process group together before the interpreter exits.

    Without it a gloo rank that reaches exit while its peer still holds the
    group can abort ("terminate called without an active exception") and
    turn a finished run into a failed launch.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def enable_amp(cfg: Config) -> None:
    """``--amp``: fp16 with dynamic loss scaling on GPU, bf16 on CPU."""
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.type = 'eva_mm.AutocastOptimWrapper'
        cfg.optim_wrapper.dtype = 'bfloat16'


def _flat_keys(node: object, prefix: str = '') -> List[str]:
    if not isinstance(node, dict):
        return []
    keys = []
    for key, value in node.items():
        full = f'{prefix}{key}'
        keys.append(full)
        keys.extend(_flat_keys(value, full + '.'))
    return keys


def warn_new_keys(cfg: Config, options: Iterable[str]) -> None:
    """Name ``--cfg-options`` keys that the config does not have.

    Adding keys is legitimate (a constructor argument the config leaves at
    its default), so this warns rather than fails, and suggests the closest
    existing key to catch typos.

    Args:
        cfg: The config before the options are merged.
        options: The option keys, dotted.
    """
    existing = _flat_keys(cfg._cfg_dict.to_dict())
    for key in options:
        if key in existing:
            continue
        close = difflib.get_close_matches(key, existing, n=1, cutoff=0.8)
        hint = f' Did you mean {close[0]!r}?' if close else ''
        print_log(
            f'--cfg-options adds {key!r}, which the config does not have.'
            f'{hint}',
            logger='current',
            level=30)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The arguments tools/train.py and tools/test.py share."""
    parser.add_argument('--work-dir', help='where logs and outputs go')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_cfg.max_iters=100')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher (the dist_*.sh scripts use pytorch)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args: argparse.Namespace) -> Config:
    """Read ``args.config`` and apply the common arguments to it."""
    # Launchers that pass the rank as an argument do not set the variable.
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        warn_new_keys(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint-format``, for tools that load a checkpoint."""
    parser.add_argument(
        '--checkpoint-format',
        metavar='NAME',
        help='the registered format the checkpoint is in (one of the source '
        'formats of tools/model_converters/convert_eva.py), for an official '
        'file whose format its names do not tell; by default the model-zoo '
        "entry's, or the one recognised from its keys")


def locate_load_from(cfg: Config) -> None:
    """``cfg.load_from`` as a path or URL mmengine can load.

    A model-zoo name becomes its entry's URL (the entry is found again from
    the URL when the file is converted); a local file is checked to be a
    complete checkpoint before the runner is built.

    Args:
        cfg: The config; ``load_from`` is replaced in place.

    Raises:
        FileNotFoundError: ``load_from`` is no file, URL or zoo name.
        CheckpointError: The zoo entry holds backbone weights, or the file
            is truncated or no checkpoint.
    """
    spec = cfg.get('load_from')
    if not spec:
        return
    location, model = checkpoint_location(spec)
    require_whole_model(model, spec)
    if not is_url(location) and osp.isfile(location):
        check_checkpoint_file(location)
    cfg.load_from = location


def build_runner(cfg: Config) -> Runner:
    """Build the config's runner, adapted to the hardware at hand.

    ``load_from`` may be a file, an ``http(s)://`` URL or a model-zoo name,
    in eva_mm's layout or a released one, which is converted in memory
    (``eva_mm.OfficialCheckpointHook``; the config key
    ``checkpoint_format`` names the format where the file's names do not
    tell it). The runner loads ``load_from`` / ``resume`` checkpoints with
    torch's ``weights_only`` default, so what they hold is allow-listed
    first, and URLs are downloaded completely or not at all.

    Args:
        cfg: The config.

    Returns:
        The runner.
    """
    setup_checkpoint_loading()
    locate_load_from(cfg)
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='eva_mm.OfficialCheckpointHook')
    ]
    prepare_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def runner_model(runner: Runner) -> torch.nn.Module:
    """The runner's model inside DDP and test-time-augmentation wrappers.

    mmengine's FlexibleRunner (``runner_type``) builds its model inside
    ``test()``; its config's model is built here on the meta device, which
    has the same names and shapes.
    """
    model = runner.model
    if not isinstance(model, torch.nn.Module):
        model = meta_model(runner.cfg)
    return bare_model(model)


def check_load_from(runner: Runner, allow_partial_load: bool,
                    option: str = '--allow-partial-load') -> None:
    """Refuse a ``load_from`` that would leave weights of the model
    unloaded, before anything runs.

    mmengine's loader only warns. The file's names and shapes are compared
    with the model (memory-mapped, not read; a URL is downloaded, and the
    runner then finds it in the cache), after the conversion the runner
    will make of an official file (on meta tensors: no values are read).

    Args:
        runner: A runner with ``load_from`` (see :func:`build_runner`).
        allow_partial_load: Load anyway, logging the weights left at their
            initialisation.
        option: How the user allows a partial load, for the error.

    Raises:
        CheckpointMismatchError: The weights would leave model weights
            unloaded and ``allow_partial_load`` is False; it names them.
        CheckpointError: The file cannot be downloaded or read, or its
            format refuses it.
    """
    spec = runner.cfg.load_from
    model = runner_model(runner)
    source = resolve_checkpoint(spec)
    shapes = {
        key: torch.empty(value.shape, dtype=value.dtype, device='meta')
        for key, value in load_state_dict_file(source.path, mmap=True).items()
    }
    weights = convert_for_model(
        shapes, model.state_dict, spec, FORMAT_OPTION,
        runner.cfg.get('checkpoint_format'), source.model, runner.cfg,
        log=False)
    check_whole_model_weights(model, weights.state_dict, spec,
                              allow_partial_load, option, weights.note)
