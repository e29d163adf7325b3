"""Train any eva_mm (or stock OpenMMLab) config with mmengine's runner.

Examples:
    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
    bash tools/dist_train.sh CONFIG NUM_PROCS [args...]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import eva_mm  # noqa: E402,F401  (the eva_mm scope for custom_imports)
from eva_mm.engine.cli import (add_common_args, build_runner,  # noqa: E402
                                  enable_amp, finish_distributed,
                                  load_config)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume from this checkpoint, or with no value from the latest '
        'checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: fp16 with dynamic loss scaling on GPU, bf16 '
        'autocast on CPU')
    add_common_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    build_runner(cfg).train()
    finish_distributed()


if __name__ == '__main__':
    main()
