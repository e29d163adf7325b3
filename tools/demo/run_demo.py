"""The CPU demo: train and evaluate a tiny EVA Cascade Mask R-CNN end to end.

Steps, each through the project's own tools so that the demo exercises the
code paths of real experiments:

1. draw the demo shapes set
   (``eva_mm.datasets.synthetic.generate_demo_shapes``);
2. train the config with ``tools/train.py`` (mmengine Runner);
3. evaluate COCO bbox and segm AP on the val split and draw every val image
   (ground truth | prediction) with ``tools/test.py --show-dir``;
4. draw a gallery of predictions, enlarged so that the class names read well,
   into ``WORK_DIR/predictions_gallery.png``;
5. print a summary and write it to ``WORK_DIR/demo_summary.json``.

Training runs in fp32. bf16 autocast (``tools/train.py --amp``) speeds the
demo ViT up by only about 25% on CPUs without AMX, under a tenth of a whole
step, and mmcv's CPU NMS rejects the bf16 scores that the RPN then gives.

Example:
    python tools/demo/run_demo.py --work-dir work_dirs/demo
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Sequence

import mmcv
import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from eva_mm.apis import draw_result, inference, init_model  # noqa: E402
from eva_mm.datasets.synthetic import generate_demo_shapes  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'demo',
                          'eva-demo-p8_cascade-mask-rcnn_shapes.py')
METRIC_KEYS = {
    'bbox_AP': 'coco/bbox_mAP',
    'bbox_AP50': 'coco/bbox_mAP_50',
    'bbox_AP75': 'coco/bbox_mAP_75',
    'segm_AP': 'coco/segm_mAP',
    'segm_AP50': 'coco/segm_mAP_50',
    'segm_AP75': 'coco/segm_mAP_75',
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train and evaluate the tiny EVA Cascade Mask R-CNN '
        'demo on CPU')
    parser.add_argument(
        '--work-dir',
        default=osp.join('work_dirs', 'demo'),
        help='where logs, the checkpoint and the pictures go')
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='config')
    parser.add_argument(
        '--data-root',
        default=osp.join('data', 'demo_shapes'),
        help='where the demo set is drawn (reused when already there)')
    parser.add_argument('--num-train', type=int, default=2000)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0)
    # One thread by default: on a 2-core machine shared with other jobs, two
    # OpenMP threads wait on each other at every op and an iteration took 7 s
    # instead of 0.9 s; alone on the machine, two threads gain little here
    # because RoIAlign, NMS and mmdet's Python run on one core anyway.
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='CPU threads of torch and OpenMP in every step')
    parser.add_argument(
        '--min-ap50',
        type=float,
        default=0.5,
        help='exit with status 1 when the final bbox AP50 is below this')
    return parser.parse_args()


def run_tool(args: List[str], threads: int) -> None:
    """Run a tools/*.py script, streaming its log, and fail on failure."""
    env = dict(os.environ)
    for name in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        env[name] = str(threads)
    command = [sys.executable] + args
    print('+ ' + ' '.join(command), flush=True)
    subprocess.run(command, env=env, cwd=ROOT, check=True)


def as_cli_options(options: Dict[str, object]) -> List[str]:
    """``--cfg-options`` arguments for a dict of config overrides."""
    return ['--cfg-options'] + [f'{key}={value}'
                                for key, value in options.items()]


def read_test_metrics(work_dir: str, known_runs: set) -> Dict[str, float]:
    """The metrics ``tools/test.py`` logged in its new run folder."""
    runs = sorted(set(glob.glob(osp.join(work_dir, '2*'))) - known_runs)
    if not runs:
        raise FileNotFoundError(f'No new run folder in {work_dir}.')
    log_file = osp.join(runs[-1], osp.basename(runs[-1]) + '.json')
    with open(log_file) as f:
        scalars = json.loads(f.read().strip().splitlines()[-1])
    return {name: float(scalars[key]) for name, key in METRIC_KEYS.items()}


def draw_gallery(config: str,
                 checkpoint: str,
                 img_paths: Sequence[str],
                 out_file: str,
                 cfg_options: Dict[str, object],
                 zoom: int = 3,
                 columns: int = 4,
                 score_thr: float = 0.5) -> None:
    """Predict on a few images and draw them, enlarged, in one picture.

    The demo images are 128 px, too small for legible labels, so the image
    and the predictions are scaled up before drawing.
    """
    model = init_model(config, checkpoint, cfg_options=cfg_options)
    tiles = []
    for path in img_paths:
        picture = draw_result(
            model, path, inference(model, path), score_thr=score_thr,
            zoom=zoom)
        # A white frame keeps neighbouring tiles apart.
        tiles.append(
            np.pad(picture, ((3, 3), (3, 3), (0, 0)), constant_values=255))
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    rows = [
        np.concatenate(tiles[i:i + columns], axis=1)
        for i in range(0, len(tiles), columns)
    ]
    mmcv.imwrite(mmcv.rgb2bgr(np.concatenate(rows, axis=0)), out_file)


def main() -> None:
    args = parse_args()
    start = time.time()
    torch.set_num_threads(args.threads)
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data_root)
    os.makedirs(work_dir, exist_ok=True)

    print(f'[demo] drawing the shapes set into {data_root}', flush=True)
    ann_files = generate_demo_shapes(
        data_root,
        num_train=args.num_train,
        num_val=args.num_val,
        seed=args.seed)
    data_options = {
        f'{loader}.dataset.data_root': data_root
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    }
    data_options.update({
        'val_evaluator.ann_file': ann_files['val'],
        'test_evaluator.ann_file': ann_files['val'],
        'randomness.seed': args.seed,
    })

    print('[demo] training', flush=True)
    # The test run below evaluates the final model; skip the training loop's
    # own validation of the same model. --resume continues a killed run from
    # its last checkpoint, and a finished one costs nothing to run again.
    run_tool([
        osp.join('tools', 'train.py'), args.config, '--work-dir', work_dir,
        '--resume'
    ] + as_cli_options(dict(data_options, **{'train_cfg.val_begin': 10**9})),
             args.threads)
    train_end = time.time()

    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    print('[demo] evaluating and drawing predictions', flush=True)
    known_runs = set(glob.glob(osp.join(work_dir, '2*')))
    # The work dir is absolute: mmdet's visualization hook joins it again
    # with the show dir at every batch, which nests relative paths.
    run_tool([
        osp.join('tools', 'test.py'), args.config, checkpoint, '--work-dir',
        work_dir, '--show-dir', 'predictions'
    ] + as_cli_options(data_options), args.threads)
    metrics = read_test_metrics(work_dir, known_runs)
    print('[demo] drawing the gallery', flush=True)
    gallery = osp.join(work_dir, 'predictions_gallery.png')
    val_images = sorted(glob.glob(osp.join(data_root, 'val', '*.png')))
    draw_gallery(args.config, checkpoint, val_images[:12], gallery,
                 data_options)

    summary = dict(
        metrics=metrics,
        wall_time_s=round(time.time() - start, 1),
        train_time_s=round(train_end - start, 1),
        checkpoint=checkpoint,
        gallery=gallery,
        predictions=max(glob.glob(osp.join(work_dir, '2*', 'predictions'))),
        config=osp.relpath(args.config, ROOT),
        threads=args.threads)
    with open(osp.join(work_dir, 'demo_summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print('[demo] summary')
    for name, value in metrics.items():
        print(f'  {name:10s} {value:.3f}')
    print(f'  wall time  {summary["wall_time_s"] / 60:.1f} min '
          f'(data and training {summary["train_time_s"] / 60:.1f} min)')
    print(f'  gallery    {gallery}')
    print(f'  per image  {summary["predictions"]}')
    print(f'  summary    {osp.join(work_dir, "demo_summary.json")}')
    if metrics['bbox_AP50'] < args.min_ap50:
        print(f'[demo] FAILED: bbox AP50 {metrics["bbox_AP50"]:.3f} < '
              f'{args.min_ap50}')
        sys.exit(1)


if __name__ == '__main__':
    main()
