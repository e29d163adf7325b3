"""Evaluate a checkpoint with any eva_mm (or stock OpenMMLab) config.

Examples:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
    python tools/test.py CONFIG CHECKPOINT --tta   # multi-scale + flip
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [args...]
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import eva_mm  # noqa: E402,F401  (registers components and the load allow-list)
from eva_mm.engine.launch import (add_common_args, build_runner,  # noqa: E402
                                  finish_distributed, load_config)


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
    build_runner(cfg).test()
    finish_distributed()


if __name__ == '__main__':
    main()
