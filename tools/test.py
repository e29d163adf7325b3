"""Evaluate a checkpoint with any eva_mm (or stock OpenMMLab) config.

Examples:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
    python tools/test.py CONFIG CHECKPOINT --tta   # multi-scale + flip
    python tools/test.py NAME              # a model-zoo name: its config and
                                           # official file
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [args...]

CHECKPOINT is a file, an ``http(s)://`` URL (downloaded into the checkpoint
cache) or a model-zoo name (``python tools/model_zoo.py list``), in
eva_mm's layout or a released file's own, which is converted in memory
(its format recognised from its keys, or named by its zoo entry or
``--checkpoint-format``). A checkpoint that leaves any weight of the model
unloaded (missing or mis-shaped keys, e.g. a file of another model or a
Cascade R-CNN without its last stage) is refused with the list of those
keys before anything is evaluated; ``--allow-partial-load`` runs anyway and
logs the keys left at their initialisation.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import eva_mm  # noqa: E402,F401  (the eva_mm scope for custom_imports)
from eva_mm.engine.cli import (add_common_args,  # noqa: E402
                                  add_format_argument, build_runner,
                                  check_load_from, finish_distributed,
                                  load_config)
from eva_mm.checkpoints.errors import CheckpointError  # noqa: E402
from eva_mm.checkpoints.zoo import config_entry  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a checkpoint')
    parser.add_argument(
        'config', help='config file, or a model-zoo name (then CHECKPOINT '
        'defaults to its official file)')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        help='checkpoint file, http(s):// URL or model-zoo name')
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
    add_format_argument(parser)
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


def zoo_config(args: argparse.Namespace) -> None:
    """``tools/test.py NAME``: the config and file of a model-zoo name.

    Raises:
        FileNotFoundError: CONFIG is no file and no zoo name.
        ValueError: CHECKPOINT is missing for a config file.
    """
    if osp.isfile(args.config):
        if args.checkpoint is None:
            raise ValueError('give CHECKPOINT after CONFIG (a file, URL or '
                             'model-zoo name), or a model-zoo name alone')
        return
    info = config_entry(args.config)
    args.config = str(info.config_path)
    if args.checkpoint is None:
        args.checkpoint = info.weights


def main() -> None:
    args = parse_args()
    try:
        zoo_config(args)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'tools/test.py: error: {err}')
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.checkpoint_format:
        cfg.checkpoint_format = args.checkpoint_format
    if args.show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            raise KeyError('--show-dir needs a visualization hook in '
                           'default_hooks; this config has none.')
        hook.draw = True
        hook.test_out_dir = args.show_dir
    if args.tta:
        enable_tta(cfg)
    try:
        runner = build_runner(cfg)
        check_load_from(runner, args.allow_partial_load)
    except (FileNotFoundError, CheckpointError) as err:
        sys.exit(f'tools/test.py: error: {err}')
    runner.test()
    finish_distributed()


if __name__ == '__main__':
    main()
