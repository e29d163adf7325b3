"""Time and memory of EVA ViT-Adapter + Mask2Former semantic segmentation.

Builds the paper's ADE20K model (configs/segmentation/
eva-b-p16_vit-adapter_mask2former_coco-stuff-pre_20k_ade20k-896.py: the
EVA head with 1024 channels, 200 queries, 6 pixel-decoder and 8 decoder
layers, 150 classes) with the backbone of each ``--arch`` and times
sliding-window inference (896 windows, stride 512, as ``mode='slide'``
tests) of random images under ``torch.inference_mode``, in fp32 and with
bf16 autocast. With ``--train`` it instead times one training step
(forward, Mask2Former losses, backward) on a random crop with random
labels, activation checkpointing as in the config.

Every measurement runs in a fresh process so that its peak memory is its
own: peak resident set size on CPU (``ru_maxrss``, minus the process
before the model exists), peak allocated memory on GPU. Prints a Markdown
table::

    python tools/analysis/seg_inference_benchmark.py --arch tiny base \\
        --sizes 896x896 896x1184 --dtype fp32 bf16 --iters 2 --threads 1
    python tools/analysis/seg_inference_benchmark.py --train \\
        --arch tiny base --sizes 512x512 640x640 896x896 --threads 1
"""
import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
from typing import Dict, Tuple

import torch

from common import REPO_ROOT as ROOT
from common import timed_runs

# Run from a checkout without installing eva_mm.
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / ('configs/segmentation/'
                 'eva-b-p16_vit-adapter_mask2former_coco-stuff-pre_20k_'
                 'ade20k-896.py')
# Backbone overrides per --arch: the B config's own, or the tiny ViT with as
# many deformable heads as ViT-Adapter-T (6).
ARCHS: Dict[str, dict] = {
    'tiny': dict(arch='tiny', deform_num_heads=6, interaction_indexes=None),
    'base': dict(),
    'large': dict(arch='large', deform_num_heads=16,
                  interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]]),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', nargs='+', default=['tiny', 'base'],
                        choices=sorted(ARCHS))
    parser.add_argument('--sizes', nargs='+', default=['896x896'],
                        help='image (inference) or crop (--train) sizes HxW')
    parser.add_argument('--dtype', nargs='+', default=['fp32'],
                        choices=['fp32', 'bf16'],
                        help='autocast dtype; weights stay fp32')
    parser.add_argument('--train', action='store_true',
                        help='time a training step instead of inference')
    parser.add_argument('--iters', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch decides)')
    parser.add_argument('--device', default='cpu')
    # Internal: one measurement, run in a child process.
    parser.add_argument('--single', nargs=3, metavar=('ARCH', 'SIZE', 'DTYPE'),
                        help=argparse.SUPPRESS)
    return parser.parse_args()


def parse_size(text: str) -> Tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise SystemExit(f'error: size {text!r} is not HxW, e.g. 896x896')
    if height % 32 or width % 32:
        raise SystemExit(f'error: size {text} must be a multiple of 32, as '
                         'the test pipeline (ResizeToMultiple) makes it')
    return height, width


def peak_memory_mb(device: torch.device) -> float:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(arch: str, train: bool, device: torch.device) -> torch.nn.Module:
    """The paper segmentor with the ``arch`` backbone."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings
    cfg = Config.fromfile(str(CONFIG))
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    from eva_mm.models import EVAViT
    cfg.model.backbone.update(ARCHS[arch], init_cfg=None,
                              norm_cfg=dict(type='BN', requires_grad=True))
    width = EVAViT.arch_zoo[cfg.model.backbone.arch]['embed_dims']
    cfg.model.decode_head.in_channels = [width] * 4
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(device).train(train)


def measure(arch: str, size: Tuple[int, int], dtype: str, train: bool,
            iters: int, warmup: int, device: torch.device) -> dict:
    """Seconds per image (or step) and peak memory of one setting."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    base_memory = peak_memory_mb(device)
    torch.manual_seed(0)
    model = build(arch, train, device)
    height, width = size
    image = torch.randn(1, 3, height, width, device=device)
    meta = dict(img_shape=size, ori_shape=size, pad_shape=size)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=dtype == 'bf16')

    def step() -> None:
        if train:
            sample = SegDataSample(metainfo=meta)
            # Blocks of 8 random classes, like a scene's regions.
            blocks = torch.randint(0, 8, (1, height // 64, width // 64))
            sample.gt_sem_seg = PixelData(
                data=blocks.repeat_interleave(64, 1).repeat_interleave(
                    64, 2).to(device))
            with autocast:
                losses = model.loss(image, [sample])
            sum(v for k, v in losses.items() if 'loss' in k).backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), autocast:
                model.inference(image, [dict(meta)])

    times = timed_runs(step, iters, warmup, device)
    test_cfg = model.test_cfg
    windows = 1
    if not train:
        rows = max(height - test_cfg.crop_size[0] + test_cfg.stride[0] - 1,
                   0) // test_cfg.stride[0] + 1
        cols = max(width - test_cfg.crop_size[1] + test_cfg.stride[1] - 1,
                   0) // test_cfg.stride[1] + 1
        windows = rows * cols
    return dict(
        arch=arch, size=f'{height}x{width}', dtype=dtype, windows=windows,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        seconds=statistics.median(times), min=min(times), max=max(times),
        peak_mb=peak_memory_mb(device) - (base_memory if device.type == 'cpu'
                                          else 0))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.single:
        arch, size, dtype = args.single
        print(json.dumps(measure(arch, parse_size(size), dtype, args.train,
                                 args.iters, args.warmup, device)))
        return
    sizes = [parse_size(s) for s in args.sizes]
    kind = 'training step' if args.train else 'slide inference'
    cpu = platform.processor() or platform.machine()
    print(f'- {kind}; device: {device} ({cpu}), {torch.get_num_threads()} '
          f'torch thread(s); torch {torch.__version__}.')
    unit = 's/step' if args.train else 's/image'
    print(f'\n| arch | params (M) | {"crop" if args.train else "image"} | '
          f'windows | dtype | {unit} (min-max) | peak memory (MiB) |\n'
          '|---|---|---|---|---|---|---|')
    common = ['--iters', str(args.iters), '--warmup', str(args.warmup),
              '--device', args.device] + (['--train'] if args.train else [])
    if args.threads:
        common += ['--threads', str(args.threads)]
    for arch in args.arch:
        for height, width in sizes:
            for dtype in args.dtype:
                proc = subprocess.run(
                    [sys.executable, __file__, '--single', arch,
                     f'{height}x{width}', dtype, *common],
                    capture_output=True, text=True)
                if proc.returncode != 0:
                    error = (proc.stderr.strip().splitlines() or ['?'])[-1]
                    print(f'| {arch} | | {height}x{width} | | {dtype} | '
                          f'failed: {error} | |', flush=True)
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f'| {arch} | {row["params_m"]:.0f} | {row["size"]} | '
                      f'{row["windows"]} | {dtype} | {row["seconds"]:.2f} '
                      f'({row["min"]:.2f}-{row["max"]:.2f}) | '
                      f'{row["peak_mb"]:.0f} |', flush=True)


if __name__ == '__main__':
    main()
