"""Measure EVA MIM pre-training throughput (images/s) of a config.

Builds the config's model and optimizer wrapper, feeds random images of the
config's size with masks from the config's mask generator (no data loading,
so this is the model's rate), runs warm-up steps, then times full training
steps: teacher forward, student forward and backward, optimizer step. The
teacher's weights are random unless ``--teacher-weights`` is given (the rate
does not depend on them).

Example:
    python tools/analysis/mim_throughput.py \\
        configs/mim/eva-mim_vit-base-p14_clip-l14_128xb32-150e.py \\
        --batch-size 8 --steps 3 --bf16
"""
import argparse
import contextlib
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from common import REPO_ROOT, timed_runs

# Run from a checkout without installing eva_mm.
sys.path.insert(0, str(REPO_ROOT))
from eva_mm.registry import MODELS  # noqa: E402
from mmpretrain.registry import TRANSFORMS  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402


def measure(config: str,
            batch_size: int,
            steps: int,
            warmup: int = 1,
            bf16: bool = False,
            teacher_weights: Optional[str] = None) -> float:
    """Training images per second of ``config`` on this machine."""
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    cfg.model.target_generator.pretrained = teacher_weights
    model = MODELS.build(cfg.model)
    model.init_weights()
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    model.to(device).train()
    optim_cfg = dict(cfg.optim_wrapper)
    # DeepSpeed configs are measured as their plain equivalent.
    optim_cfg['type'] = 'OptimWrapper'
    optim = build_optim_wrapper(model, optim_cfg)
    masker_cfg = next(t for t in cfg.train_pipeline
                      if t['type'].endswith('MaskGenerator'))
    masker = TRANSFORMS.build(masker_cfg)
    size = cfg.model.backbone.img_size
    autocast = torch.autocast(device, dtype=torch.bfloat16) \
        if bf16 else contextlib.nullcontext()
    np.random.seed(0)

    def step() -> None:
        images = torch.randn(batch_size, 3, size, size, device=device)
        samples = []
        for _ in range(batch_size):
            sample = DataSample()
            sample.set_mask(torch.from_numpy(masker.transform({})['mask']))
            samples.append(sample)
        with autocast:
            loss = model(images, samples, mode='loss')['loss']
        optim.update_params(loss)

    times = timed_runs(step, steps, warmup, torch.device(device))
    return batch_size * steps / sum(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--bf16', action='store_true',
                        help='bf16 autocast (fp32 otherwise)')
    parser.add_argument('--teacher-weights', help='local CLIP weights file')
    args = parser.parse_args()
    rate = measure(args.config, args.batch_size, args.steps, args.warmup,
                   args.bf16, args.teacher_weights)
    print(f'{Path(args.config).name}: {rate:.2f} images/s '
          f'(batch {args.batch_size}, {"bf16" if args.bf16 else "fp32"}, '
          f'{"GPU" if torch.cuda.is_available() else "CPU"}, '
          f'{torch.get_num_threads()} threads)')


if __name__ == '__main__':
    main()
