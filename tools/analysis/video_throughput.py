"""Inference throughput (clips/s) of the video EVAViT recognizer.

Builds the paper's video model (tubelet 1, joint space-time attention,
mean pooling + fc_norm, linear head) for each ``--arch`` as mmaction2's
``Recognizer3D`` runs it, feeds random (B, 3, T, H, W) clips and reports
clips/s = batch / median time of the timed forward passes under
``torch.inference_mode``. A 4 x 3-view test costs 12 such clips per video::

    python tools/analysis/video_throughput.py --arch tiny base \\
        --frames 16 --img-size 224 --iters 3 --threads 1
"""
import argparse
import platform
import statistics
import sys
from typing import List

import torch

from common import REPO_ROOT, timed_runs

# Run from a checkout without installing eva_mm.
sys.path.insert(0, str(REPO_ROOT))

from eva_mm.models import EVAViT  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', nargs='+', default=['tiny', 'base'])
    parser.add_argument('--frames', type=int, default=16)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--num-classes', type=int, default=400)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch decides)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', choices=['fp32', 'bf16', 'fp16'],
                        default='fp32',
                        help='autocast dtype; weights stay fp32')
    return parser.parse_args()


def build(arch: str, frames: int, img_size: int,
          num_classes: int) -> torch.nn.Module:
    """The video backbone and its linear head, as Recognizer3D chains them."""
    backbone = EVAViT(
        arch=arch,
        img_size=img_size,
        num_frames=frames,
        out_type='avg_featmap',
        use_fc_norm=True,
        final_norm=False,
        tuple_output=False)
    head = torch.nn.Linear(backbone.embed_dims, num_classes)
    return torch.nn.Sequential(backbone, head).eval()


def time_model(model: torch.nn.Module, clips: torch.Tensor, iters: int,
               warmup: int, dtype: str) -> List[float]:
    """Seconds of each timed forward pass."""
    autocast = dict(fp32=None, bf16=torch.bfloat16, fp16=torch.float16)[dtype]
    with torch.inference_mode(), torch.autocast(
            clips.device.type, dtype=autocast,
            enabled=autocast is not None):
        return timed_runs(lambda: model(clips), iters, warmup, clips.device)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f'- Device: {device} ({platform.processor() or platform.machine()}'
          f'), {torch.get_num_threads()} torch thread(s); torch '
          f'{torch.__version__}; dtype {args.dtype}.')
    print('\n| arch | frames x px | tokens | batch | clips/s | s/clip '
          '(min-max) |\n|---|---|---|---|---|---|')
    for arch in args.arch:
        torch.manual_seed(0)
        model = build(arch, args.frames, args.img_size,
                      args.num_classes).to(device)
        clips = torch.randn(args.batch_size, 3, args.frames, args.img_size,
                            args.img_size, device=device)
        times = time_model(model, clips, args.iters, args.warmup, args.dtype)
        tokens = 1 + args.frames * (args.img_size //
                                    model[0].patch_size)**2
        per_clip = [t / args.batch_size for t in times]
        print(f'| {arch} | {args.frames} x {args.img_size} | {tokens} | '
              f'{args.batch_size} | '
              f'{args.batch_size / statistics.median(times):.3f} | '
              f'{statistics.median(per_clip):.2f} ({min(per_clip):.2f}-'
              f'{max(per_clip):.2f}) |', flush=True)


if __name__ == '__main__':
    main()
