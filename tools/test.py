"""Evaluate a checkpoint with any eva_mm (or stock OpenMMLab) config.

Examples:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
    python tools/test.py CONFIG CHECKPOINT --tta   # multi-scale + flip
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [args...]

A checkpoint that leaves any weight of the model unloaded (missing or
mis-shaped keys, e.g. an unconverted official file or a Cascade R-CNN
without its last stage) is refused with the list of those keys, before
anything runs; ``--allow-partial-load`` runs anyway and logs the keys left
at their initialisation.
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import MODELS
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import eva_mm  # noqa: E402,F401  (the eva_mm scope for custom_imports)
from eva_mm.engine.cli import (add_common_args, build_runner,  # noqa: E402
                                  finish_distributed, load_config)
from eva_mm.checkpoints.errors import CheckpointError  # noqa: E402
from eva_mm.checkpoints.model_check import (  # noqa: E402
    check_whole_model_checkpoint)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--show-dir',
        help='draw predictions into this folder (relative to the work dir)')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation: the config\'s tta_pipeline and '
        'tta_model (mmseg: multi-scale + flip)')
    parser.add_argument(
        '--allow-partial-load',
        action='store_true',
        help='test even if the checkpoint lacks some of the model\'s '
        'weights (or has them in another shape); they keep their random '
        'initialisation and are listed. Without it such a checkpoint is '
        'refused.')
    add_common_args(parser)
    return parser.parse_args()


def enable_tta(cfg: Config) -> None:
    """``--tta``: test through the config's ``tta_pipeline`` and wrap the
    model in its ``tta_model``, as mmseg's and mmdet's tools/test.py do.

    Raises:
        ValueError: The config has no ``tta_pipeline`` or ``tta_model``.
    """
    missing = [key for key in ('tta_pipeline', 'tta_model') if key not in cfg]
    if missing:
        raise ValueError(
            f'--tta needs {" and ".join(missing)} in the config; add them '
            "(mmseg: tta_model = dict(type='SegTTAModel') and a "
            "tta_pipeline with a TestTimeAug step) or drop --tta.")
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def bare_model(runner: Runner) -> torch.nn.Module:
    """The runner's model inside DDP and test-time-augmentation wrappers.

    mmengine's FlexibleRunner (``runner_type``) builds its model inside
    ``test()``; its config's model is built here on the meta device, which
    has the same names and shapes.
    """
    model = runner.model
    if not isinstance(model, torch.nn.Module):
        with torch.device('meta'):
            model = MODELS.build(model)
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint {args.checkpoint} does not exist.')
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            raise KeyError('--show-dir needs a visualization hook in '
                           'default_hooks; this config has none.')
        hook.draw = True
        hook.test_out_dir = args.show_dir
    if args.tta:
        enable_tta(cfg)
    runner = build_runner(cfg)
    try:
        check_whole_model_checkpoint(
            bare_model(runner),
            args.checkpoint,
            allow_partial=args.allow_partial_load)
    except CheckpointError as err:
        sys.exit(f'tools/test.py: error: {err}')
    runner.test()
    finish_distributed()


if __name__ == '__main__':
    main()
