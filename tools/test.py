"""Evaluate a checkpoint with any eva_mm (or stock OpenMMLab) config.

Examples:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [args...]
"""
import argparse
import os.path as osp
import sys

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
    add_common_args(parser)
    return parser.parse_args()


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
    build_runner(cfg).test()
    finish_distributed()


if __name__ == '__main__':
    main()
