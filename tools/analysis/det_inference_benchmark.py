"""Per-image inference time and peak memory of the EVA Cascade Mask R-CNN.

Builds a detection paper config (by default the ViT-B COCO config: window
14, global blocks 2/5/8/11, SimpleFPN, 3-stage Cascade with 4conv1fc heads,
linear soft-NMS with score threshold 0 and maskness rescoring) with the
backbone of each ``--arch``, its position embedding learned for each
``--img-size``, and times ``model.predict`` on one random, already
normalised square image of that size, as the configs' square padding feeds
it. Randomly initialised heads score every proposal alike (about 1/81 for
every class), so with the configs' soft-NMS, which keeps every detection
above 1e-3 as detectron2 does, an image would keep nearly all 1000 x 80
proposal-class pairs, far more than a trained model; ``--max-per-img``
(default 100) caps the detections instead, so that every run masks and
rescores the same number of detections (-1: the config's own setting).

Reported per (arch, size, dtype): the median seconds per image of the
backbone + pyramid alone and of the whole detector over ``--iters`` timed
runs after ``--warmup``; with ``--memory``, the allocator-level tensor peak
and RSS growth of one more fp32 ``predict`` (``peak_memory`` of
tools/analysis/common.py). bf16 runs under ``torch.autocast``; a
dtype the detector cannot run in is reported with the error instead.

Example::

    python tools/analysis/det_inference_benchmark.py --arch tiny base \\
        --img-size 1024 1280 --dtype fp32 bf16 --threads 1 --memory
"""
import argparse
import platform
import statistics
import sys
from pathlib import Path
from typing import Callable, Optional

import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import init_default_scope

from common import REPO_ROOT as ROOT
from common import peak_memory, timed_runs

# Run from a checkout without installing eva_mm.
sys.path.insert(0, str(ROOT))
import eva_mm  # noqa: E402,F401  (the eva_mm scope for the config)
from mmdet.registry import MODELS  # noqa: E402

DEFAULT_CONFIG = (ROOT / 'configs/detection' /
                  'eva-b-p16_cascade-mask-rcnn_lsj-1024_coco.py')
DTYPES = {'fp32': None, 'bf16': torch.bfloat16}
WIDTHS = {'tiny': 192, 'small': 384, 'base': 768, 'large': 1024,
          'giant': 1408}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=str(DEFAULT_CONFIG))
    parser.add_argument('--arch', nargs='+', default=['tiny', 'base'],
                        choices=sorted(WIDTHS))
    parser.add_argument('--img-size', nargs='+', type=int,
                        default=[1024, 1280])
    parser.add_argument('--dtype', nargs='+', default=['fp32'],
                        choices=sorted(DTYPES))
    parser.add_argument('--iters', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch decides)')
    parser.add_argument('--memory', action='store_true',
                        help='also measure the fp32 peak memory')
    parser.add_argument('--max-per-img', type=int, default=100,
                        help='detections kept per image (random heads '
                        "would keep tens of thousands); -1: the config's")
    return parser.parse_args()


def build(config: str, arch: str, img_size: int,
          max_per_img: int) -> torch.nn.Module:
    """The config's detector with the ``arch`` backbone for ``img_size``."""
    cfg = Config.fromfile(config)
    cfg.model.backbone.update(arch=arch, img_size=img_size)
    if max_per_img != -1:
        cfg.model.test_cfg.rcnn.max_per_img = max_per_img
    cfg.model.neck.in_channels = WIDTHS[arch]
    init_default_scope('mmdet')
    torch.manual_seed(0)
    # The modules' own initialisation: timings do not depend on the values,
    # and init_weights would log every tensor.
    return MODELS.build(cfg.model).eval()


def sample(img_size: int) -> DetDataSample:
    """The metadata of one square, unscaled test image."""
    shape = (img_size, img_size)
    return DetDataSample(
        metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                      batch_input_shape=shape, scale_factor=(1.0, 1.0)))


def median_seconds(step: Callable[[], object], iters: int,
                   warmup: int) -> float:
    return statistics.median(
        timed_runs(step, iters, warmup, torch.device('cpu')))


def run_case(model: torch.nn.Module, img_size: int, dtype: Optional[
        torch.dtype], iters: int, warmup: int) -> str:
    """Table cells: backbone + pyramid s/img, detector s/img, detections."""
    image = torch.randn(1, 3, img_size, img_size)
    samples = [sample(img_size)]
    outputs = {}

    def features() -> None:
        model.extract_feat(image)

    def detector() -> None:
        outputs['result'] = model.predict(image, samples)

    cells = []
    for step in (features, detector):
        with torch.inference_mode(), torch.autocast(
                'cpu', dtype=dtype or torch.bfloat16,
                enabled=dtype is not None):
            try:
                cells.append(f'{median_seconds(step, iters, warmup):.2f}')
            except RuntimeError as error:  # e.g. an op without bf16
                cells.append(f'fails: {str(error).splitlines()[0][:60]}')
    result = outputs.get('result')
    cells.append(str(len(result[0].pred_instances)) if result else '-')
    return ' | '.join(cells)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'- {platform.processor() or platform.machine()}, '
          f'{torch.get_num_threads()} torch thread(s), torch '
          f'{torch.__version__}; config {Path(args.config).name}; median of '
          f'{args.iters} runs after {args.warmup} warm-up; max_per_img '
          f'{args.max_per_img}.')
    memory_cols = ' tensor peak (GiB) | RSS growth (GiB) |' \
        if args.memory else ''
    print('\n| arch | size | dtype | backbone + FPN s/img | detector s/img | '
          f'detections |{memory_cols}\n|---|---|---|---|---|---|' +
          ('---|---|' if args.memory else ''))
    for arch in args.arch:
        for size in args.img_size:
            model = build(args.config, arch, size, args.max_per_img)
            for name in args.dtype:
                cells = run_case(model, size, DTYPES[name], args.iters,
                                 args.warmup)
                memory = ''
                if args.memory and name == 'fp32':
                    image = torch.randn(1, 3, size, size)

                    def step() -> None:
                        with torch.inference_mode():
                            model.predict(image, [sample(size)])

                    peak = peak_memory(step, torch.device('cpu'))
                    rss = '-' if peak['rss'] is None else \
                        f'{peak["rss"] / 2**30:.2f}'
                    memory = f' {peak["tensor"] / 2**30:.2f} | {rss} |'
                elif args.memory:
                    memory = ' | |'
                print(f'| {arch} | {size} | {name} | {cells} |{memory}',
                      flush=True)


if __name__ == '__main__':
    main()
