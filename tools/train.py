"""Train any eva_mm (or stock OpenMMLab) config with mmengine's runner.

Examples:
    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
    python tools/train.py CONFIG --cfg-options load_from=FILE_URL_OR_NAME
    bash tools/dist_train.sh CONFIG NUM_PROCS [args...]

``load_from`` may be a file, an ``http(s)://`` URL or a model-zoo name, in
eva_mm's layout or a released file's own (converted in memory; see
``eva_mm.OfficialCheckpointHook``). It is loaded non-strictly, as mmengine
does, listing what it skips: fine-tuning on another class set starts the
class scores from scratch.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import eva_mm  # noqa: E402,F401  (the eva_mm scope for custom_imports)
from eva_mm.engine.cli import (add_common_args,  # noqa: E402
                                  add_format_argument, build_runner,
                                  enable_amp, finish_distributed,
                                  load_config)
from eva_mm.checkpoints.errors import CheckpointError  # noqa: E402


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
    add_format_argument(parser)
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
    if args.checkpoint_format:
        cfg.checkpoint_format = args.checkpoint_format
    try:
        runner = build_runner(cfg)
    except (FileNotFoundError, CheckpointError) as err:
        sys.exit(f'tools/train.py: error: {err}')
    try:
        runner.train()
    except CheckpointError as err:
        sys.exit(f'tools/train.py: error: {err}')
    finish_distributed()


if __name__ == '__main__':
    main()
