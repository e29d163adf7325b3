"""Helpers for tests that run tools/train.py in subprocesses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def train_cmd(config: Path, work_dir: Path, *extra: str) -> list:
    """The command line of ``tools/train.py`` with this interpreter."""
    return [
        sys.executable,
        str(ROOT / 'tools/train.py'),
        str(config), '--work-dir',
        str(work_dir), *extra
    ]


def read_losses(work_dir: Path) -> dict:
    """Iteration -> loss from every scalars.json under the work dir."""
    losses = {}
    for log in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                losses[record['iter']] = record['loss']
    return losses


# A tiny EVAViT classifier (mmpretrain's ImageClassifier) on a generated
# image folder of two classes ({data}): 12 iterations of batch 4.
CLASSIFIER_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='eva_mm.EVAViT',
        arch=dict(embed_dims=32, num_layers=2, num_heads=2, mlp_hidden_dim=64),
        img_size=32,
        patch_size=8,
        out_type='avg_featmap',
        final_norm=False,
        use_fc_norm=True),
    head=dict(
        type='LinearClsHead',
        num_classes=2,
        in_channels=32,
        loss=dict(type='CrossEntropyLoss')))
data_preprocessor = dict(
    num_classes=2, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True)
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    dataset=dict(type='CustomDataset', data_root='{data}', pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    dataset=dict(type='CustomDataset', data_root='{data}', pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=12, by_epoch=False)]
train_cfg = dict(by_epoch=False, max_iters=12, val_interval=100)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
    timer=dict(type='IterTimerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, deterministic=False)
log_level = 'INFO'
"""


def write_classifier_run(root: Path) -> Path:
    """Draw the image folder of :data:`CLASSIFIER_CONFIG` under ``root``
    (``data/{dark,light}/{0..7}.png``, 32 px) and write the config there.

    Returns:
        The config file.
    """
    rng = np.random.default_rng(0)
    for label, colour in (('dark', 40), ('light', 200)):
        folder = root / 'data' / label
        folder.mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(
                colour + rng.normal(0, 30, (32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f'{i}.png')
    path = root / 'cfg.py'
    path.write_text(CLASSIFIER_CONFIG.replace('{data}', str(root / 'data')))
    return path


def run_tool(args, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    """Run a tool from the checkout root with one thread per process."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout)
