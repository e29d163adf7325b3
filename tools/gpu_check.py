"""One prepared check of every EVA task on a real GPU (docs/gpu.md).

Measures, on the first CUDA device, and writes ``gpu_check.json`` and
``gpu_check.md`` to ``--out-dir``:

- ``vit``: EVAViT vs timm ``Eva`` (same weights), giant at 224, bf16 forward
  and forward+backward: paired speed ratio and peak memory ratio;
- ``mim``: one ViT-g MIM step under the DeepSpeed strategy (ZeRO-1, bf16) at
  the official per-GPU batch: images/s and peak memory;
- ``det``: EVA-L Cascade Mask R-CNN at 1024: AMP training iterations/s, and
  inference per image with the config's soft-NMS and maskness;
- ``seg``: EVA-L ViT-Adapter + Mask2Former at 896: one AMP training iteration
  and one slide inference, and mmcv's CUDA multi-scale deformable attention
  against its PyTorch path on the same inputs (max abs diff);
- ``video``: a video EVAViT-L at 16x224: one bf16 training step;
- ``dist``: ``tools/dist_train.sh`` with one process (nccl) for a few
  iterations of the demo detector on a small generated set;
- ``official``: EVAViT vs the official EVA-01 detection ViT-g (imported from
  the baaivision/EVA checkout ``--official-repo`` names, same weights) at
  1024 and 1536 px: fp32 output difference, bf16 forward + backward time
  and ``torch.cuda.max_memory_allocated`` per model; without
  ``--official-repo`` only EVAViT is measured.

Each section is independent: a failure is recorded with its error and the
others still run; the exit code is non-zero if any failed. ``--dry-run``
runs the same code on the CPU with tiny models and sizes (the test suite does
this); its numbers mean nothing.

Example (one H200, about 5 minutes with warm caches)::

    python tools/gpu_check.py --out-dir work_dirs/gpu_check \
        --official-repo ~/EVA
"""
import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import (Callable, ContextManager, Dict, List, Optional,
                    Sequence, Tuple)

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The benchmarks' shared timing (common.py) and the official EVA models
# with their pairing to eva_mm's (official_eva.py).
sys.path.insert(0, str(ROOT / 'tools/analysis'))

from common import timed_runs  # noqa: E402
from eva_mm.models import EVAViT  # noqa: E402

SECTIONS = ('vit', 'mim', 'det', 'seg', 'video', 'dist', 'official')
DET_CONFIG = ROOT / 'configs/detection/eva-l-p16_cascade-mask-rcnn_lsj-1024_coco.py'
SEG_CONFIG = ROOT / ('configs/segmentation/'
                     'eva-l-p16_vit-adapter_mask2former_coco-stuff-pre_20k_'
                     'ade20k-896.py')
MIM_CONFIG = ROOT / ('configs/mim/eva-mim_vit-giant-p14_clip-l14_128xb32-'
                     '150e_deepspeed-bf16.py')
MIM_DRY_CONFIG = ROOT / ('configs/mim/eva-mim_demo-tiny-p8_clip-tiny_shapes_'
                         'deepspeed-bf16.py')
DEMO_DET_CONFIG = ROOT / 'configs/demo/eva-demo-p8_cascade-mask-rcnn_shapes.py'
TINY_ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_hidden_dim=64)
# The adapter needs four interactions, one block each.
TINY_ADAPTER_ARCH = dict(TINY_ARCH, num_layers=4)
# The official comparison's pair ('det-g', EVA-01's ViT-g detector) and its
# dry-run stand-in: windows with a global block every 4th, padded windows at
# the second size.
OFFICIAL_PAIR, OFFICIAL_IMGS = 'det-g', (1024, 1536)
TINY_OFFICIAL = dict(arch=TINY_ADAPTER_ARCH, window=4, global_blocks=(3, ))
TINY_OFFICIAL_IMGS = (64, 96)


@dataclass
class Plan:
    """Sizes of one run: the real check or the CPU dry run."""
    device: torch.device
    dry_run: bool
    vit_arch: object
    vit_img: int
    vit_batch: int
    mim_config: Path
    mim_batch: int
    det_arch: object
    det_img: int
    seg_arch: object
    seg_img: int
    video_arch: object
    video_frames: int
    video_img: int
    iters: int
    warmup: int
    dist_iters: int
    official_pair: object
    official_imgs: Tuple[int, ...]
    official_repo: Optional[str]

    @classmethod
    def make(cls, dry_run: bool,
             official_repo: Optional[str] = None) -> 'Plan':
        from official_eva import PAIRS, DetPair
        if dry_run:
            return cls(torch.device('cpu'), True, TINY_ARCH, 32, 2,
                       MIM_DRY_CONFIG, 2, TINY_ARCH, 64, TINY_ADAPTER_ARCH, 64,
                       TINY_ARCH, 2, 32, 1, 1, 2,
                       DetPair('det-g-tiny', 'gpu_check.py', **TINY_OFFICIAL),
                       TINY_OFFICIAL_IMGS, official_repo)
        if not torch.cuda.is_available():
            raise SystemExit('gpu_check.py: error: no CUDA device is visible '
                             '(torch.cuda.is_available() is False); run with '
                             '--dry-run to check the code path on the CPU.')
        # Per-GPU batches of the official recipes: MIM 4096 over 128 GPUs.
        return cls(torch.device('cuda'), False, 'giant', 224, 32, MIM_CONFIG,
                   32, 'large', 1024, 'large', 896, 'large', 16, 224, 10, 3,
                   20, PAIRS[OFFICIAL_PAIR], OFFICIAL_IMGS, official_repo)


# ----------------------------------------------------------------------
# Timing and memory
# ----------------------------------------------------------------------
def reset_peak(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> Optional[float]:
    """Peak allocated GPU memory since :func:`reset_peak`; ``None`` on CPU
    (the dry run measures no memory)."""
    if device.type != 'cuda':
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def seconds(step: Callable[[], object], plan: Plan) -> List[float]:
    """Wall seconds of each timed call of ``step`` after warm-up."""
    return timed_runs(step, plan.iters, plan.warmup, plan.device)


def autocast(plan: Plan, dtype: torch.dtype = torch.bfloat16
             ) -> ContextManager:
    return torch.autocast(plan.device.type, dtype=dtype)


def _arch_dims(arch: object) -> int:
    return (arch if isinstance(arch, dict) else
            EVAViT.arch_zoo[arch])['embed_dims']


# ----------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------
def check_vit(plan: Plan) -> dict:
    """EVAViT vs timm Eva with the same weights, bf16, paired timing."""
    from timm.models.eva import Eva
    cfg = plan.vit_arch if isinstance(plan.vit_arch, dict) else \
        EVAViT.arch_zoo[plan.vit_arch]
    patch = cfg.get('patch_size', 16 if plan.dry_run else 14)
    torch.manual_seed(0)
    ours = EVAViT(arch=plan.vit_arch, img_size=plan.vit_img,
                  patch_size=patch, out_type='raw').to(plan.device)
    theirs = Eva(img_size=plan.vit_img, patch_size=patch,
                 embed_dim=cfg['embed_dims'], depth=cfg['num_layers'],
                 num_heads=cfg['num_heads'],
                 mlp_ratio=cfg['mlp_hidden_dim'] / cfg['embed_dims'],
                 num_classes=0, global_pool='token').to(plan.device)
    # Same weights, so the two compute the same function.
    theirs.load_state_dict(ours.state_dict(), strict=False)
    x = torch.randn(plan.vit_batch, 3, plan.vit_img, plan.vit_img,
                    device=plan.device)
    result: Dict[str, object] = dict(
        arch=str(plan.vit_arch), img_size=plan.vit_img, batch=plan.vit_batch)
    for mode in ('forward', 'forward_backward'):
        train = mode == 'forward_backward'
        rows = {}
        for name, model in (('eva_mm', ours), ('timm', theirs)):
            model.train(train)

            def step(model=model) -> None:
                if train:
                    with autocast(plan):
                        out = model.forward_features(x)
                    out.float().mean().backward()
                    model.zero_grad(set_to_none=True)
                else:
                    with torch.inference_mode(), autocast(plan):
                        model.forward_features(x)

            reset_peak(plan.device)
            times = seconds(step, plan)
            rows[name] = dict(seconds=statistics.median(times),
                              peak_gib=peak_gib(plan.device))
        ratio = rows['timm']['seconds'] / rows['eva_mm']['seconds']
        mem = rows['eva_mm']['peak_gib'], rows['timm']['peak_gib']
        result[mode] = dict(
            rows,
            speed_ratio_eva_mm_over_timm=ratio,
            memory_ratio_eva_mm_over_timm=None if mem[1] is None else
            mem[0] / mem[1])
    return result


def _mim_samples(cfg, batch: int) -> list:
    from mmpretrain.registry import TRANSFORMS
    from mmpretrain.structures import DataSample
    masker_cfg = next(t for t in cfg.train_pipeline
                      if 'MaskGenerator' in t['type'])
    masker = TRANSFORMS.build(masker_cfg)
    samples = []
    for _ in range(batch):
        sample = DataSample()
        sample.set_mask(torch.from_numpy(masker.transform({})['mask']))
        samples.append(sample)
    return samples


def check_mim(plan: Plan) -> dict:
    """One MIM step of the ViT-g recipe under DeepSpeed ZeRO-1 bf16."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from eva_mm.registry import STRATEGIES
    cfg = Config.fromfile(str(plan.mim_config))
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    # Random teacher weights: the rate does not depend on them.
    cfg.model.target_generator.pretrained = None
    strategy_cfg = dict(cfg.strategy)
    strategy_cfg['train_micro_batch_size_per_gpu'] = plan.mim_batch
    strategy = STRATEGIES.build(strategy_cfg)
    reset_peak(plan.device)
    model, optim = strategy.prepare(
        cfg.model,
        optim_wrapper=cfg.optim_wrapper,
        dispatch_kwargs=dict(max_iters=plan.warmup + plan.iters,
                             max_epochs=1))
    size = cfg.model.backbone.img_size
    np.random.seed(0)

    def step() -> None:
        # As the config's default_collate stacks them.
        data = dict(
            inputs=torch.randint(0, 256, (plan.mim_batch, 3, size, size),
                                 dtype=torch.uint8),
            data_samples=_mim_samples(cfg, plan.mim_batch))
        model.train_step(data, optim)

    times = seconds(step, plan)
    return dict(config=plan.mim_config.name, batch_per_gpu=plan.mim_batch,
                img_size=size, images_per_s=plan.mim_batch /
                statistics.median(times), peak_gib=peak_gib(plan.device))


def _det_model(plan: Plan):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(DET_CONFIG))
    init_default_scope('mmdet')
    cfg.model.backbone.update(arch=plan.det_arch, img_size=plan.det_img,
                              init_cfg=None)
    if plan.dry_run:
        cfg.model.backbone.update(window_size=4, global_block_indexes=(1, ),
                                  with_cp=False)
    cfg.model.neck.in_channels = _arch_dims(plan.det_arch)
    # The config keeps every soft-NMS survivor above 1e-3 (EVA's test); with
    # random weights that is every proposal-class pair (~80k masks), far more
    # than a trained model keeps, so time the mask head on 100 as mmdet does.
    cfg.model.test_cfg.rcnn.max_per_img = 100
    torch.manual_seed(0)
    return MODELS.build(cfg.model).to(plan.device)


def _det_batch(plan: Plan, train: bool) -> dict:
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    size = plan.det_img
    rng = np.random.default_rng(0)
    sample = DetDataSample(metainfo=dict(
        img_shape=(size, size), ori_shape=(size, size),
        pad_shape=(size, size), batch_input_shape=(size, size),
        scale_factor=(1.0, 1.0)))
    if train:
        num = 8
        xy = rng.uniform(0, size * 0.6, (num, 2))
        wh = rng.uniform(size * 0.05, size * 0.4, (num, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, size - 1)], 1)
        masks = np.zeros((num, size, size), np.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            masks[i, y0:y1, x0:x1] = 1
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32),
            labels=torch.tensor(rng.integers(0, 80, num)),
            masks=BitmapMasks(masks, size, size))
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    return dict(inputs=[image], data_samples=[sample])


def check_det(plan: Plan) -> dict:
    """EVA-L Cascade Mask R-CNN: AMP training and soft-NMS inference."""
    from mmengine.optim import build_optim_wrapper
    model = _det_model(plan)
    # mmcv's CPU NMS has no bf16 kernel: the dry run trains in fp32.
    optim = build_optim_wrapper(model, dict(
        type='OptimWrapper' if plan.dry_run else 'AmpOptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-5)))
    model.train()
    reset_peak(plan.device)
    train_times = seconds(
        lambda: model.train_step(_det_batch(plan, True), optim), plan)
    train_peak = peak_gib(plan.device)
    model.eval()
    outputs = {}

    def infer() -> None:
        with torch.no_grad(), (nullcontext() if plan.dry_run else
                               autocast(plan, torch.float16)):
            outputs['result'] = model.test_step(_det_batch(plan, False))

    reset_peak(plan.device)
    test_times = seconds(infer, plan)
    return dict(
        arch=str(plan.det_arch), img_size=plan.det_img,
        train_iters_per_s=1 / statistics.median(train_times),
        train_peak_gib=train_peak,
        test_seconds_per_image=statistics.median(test_times),
        test_peak_gib=peak_gib(plan.device),
        detections=len(outputs['result'][0].pred_instances))


def deform_attn_diff(device: torch.device) -> Optional[float]:
    """Max abs difference between mmcv's compiled multi-scale deformable
    attention and its PyTorch reference on the same random inputs; ``None``
    without CUDA (the compiled op is CUDA-only)."""
    if device.type != 'cuda':
        return None
    from mmcv.ops.multi_scale_deform_attn import (
        MultiScaleDeformableAttnFunction, multi_scale_deformable_attn_pytorch)
    torch.manual_seed(0)
    shapes = torch.tensor([[56, 56], [28, 28], [14, 14]], device=device)
    starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    batch, heads, dims, queries, levels, points = 2, 8, 32, 300, 3, 4
    value = torch.randn(batch, int(shapes.prod(1).sum()), heads, dims,
                        device=device)
    locations = torch.rand(batch, queries, heads, levels, points, 2,
                           device=device)
    weights = torch.rand(batch, queries, heads, levels, points,
                         device=device).flatten(-2).softmax(-1).view(
                             batch, queries, heads, levels, points)
    cuda = MultiScaleDeformableAttnFunction.apply(value, shapes, starts,
                                                  locations, weights, 64)
    reference = multi_scale_deformable_attn_pytorch(value, shapes, locations,
                                                    weights)
    return float((cuda - reference).abs().max())


def _seg_dry_run_head() -> Dict[str, object]:
    """Config options for a 32-channel Mask2Former with one layer per
    transformer and 16 queries."""
    head = 'model.decode_head.'
    options: Dict[str, object] = {
        head + 'feat_channels': 32,
        head + 'out_channels': 32,
        head + 'num_queries': 16,
        head + 'positional_encoding.num_feats': 16,
        head + 'train_cfg.num_points': 256,
        head + 'pixel_decoder.positional_encoding.num_feats': 16,
        head + 'pixel_decoder.encoder.num_layers': 1,
        head + 'transformer_decoder.num_layers': 1,
    }
    for layer, attns in (('pixel_decoder.encoder', ('self_attn_cfg', )),
                         ('transformer_decoder',
                          ('self_attn_cfg', 'cross_attn_cfg'))):
        prefix = f'{head}{layer}.layer_cfg.'
        for attn in attns:
            options[f'{prefix}{attn}.embed_dims'] = 32
            options[f'{prefix}{attn}.num_heads'] = 4
        options[f'{prefix}ffn_cfg.embed_dims'] = 32
        options[f'{prefix}ffn_cfg.feedforward_channels'] = 64
    return options


def check_seg(plan: Plan) -> dict:
    """EVA-L ViT-Adapter + Mask2Former: one training step, slide test."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(str(SEG_CONFIG))
    init_default_scope('mmseg')
    cfg.model.backbone.update(arch=plan.seg_arch, img_size=plan.seg_img,
                              init_cfg=None)
    if plan.dry_run:
        cfg.model.backbone.update(interaction_indexes=[[i, i]
                                                       for i in range(4)],
                                  norm_cfg=dict(type='BN'), with_cp=False,
                                  conv_inplane=16, deform_num_heads=4)
        cfg.merge_from_dict(_seg_dry_run_head())
        cfg.model.test_cfg.update(crop_size=(plan.seg_img, plan.seg_img),
                                  stride=(plan.seg_img // 2,
                                          plan.seg_img // 2))
    cfg.model.decode_head.in_channels = [_arch_dims(plan.seg_arch)] * 4
    # Training crops are padded to this size.
    cfg.model.data_preprocessor.size = (plan.seg_img, plan.seg_img)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(plan.device)
    optim = build_optim_wrapper(model, dict(
        type='OptimWrapper' if plan.dry_run else 'AmpOptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-5)))
    size = plan.seg_img

    def batch(height: int, width: int, train: bool) -> dict:
        meta = dict(img_shape=(height, width), ori_shape=(height, width),
                    pad_shape=(height, width))
        sample = SegDataSample(metainfo=meta)
        if train:
            blocks = torch.randint(0, 8, (1, height // 32, width // 32))
            sample.gt_sem_seg = PixelData(
                data=blocks.repeat_interleave(32, 1).repeat_interleave(32, 2))
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
        return dict(inputs=[image], data_samples=[sample])

    model.train()
    reset_peak(plan.device)
    train_times = seconds(
        lambda: model.train_step(batch(size, size, True), optim), plan)
    train_peak = peak_gib(plan.device)
    model.eval()
    # A 4:3 test image: two slide windows along its long side.
    test_shape = (size, size * 4 // 3)

    def infer() -> None:
        with torch.no_grad(), (nullcontext() if plan.dry_run else
                               autocast(plan, torch.float16)):
            model.test_step(batch(*test_shape, False))

    reset_peak(plan.device)
    test_times = seconds(infer, plan)
    return dict(
        arch=str(plan.seg_arch), crop=size,
        train_seconds_per_iter=statistics.median(train_times),
        train_peak_gib=train_peak,
        slide_test_image=f'{test_shape[0]}x{test_shape[1]}',
        slide_test_seconds=statistics.median(test_times),
        test_peak_gib=peak_gib(plan.device),
        deform_attn_cuda_vs_pytorch_max_abs_diff=deform_attn_diff(
            plan.device))


def check_video(plan: Plan) -> dict:
    """One bf16 training step of a video EVAViT with a linear head."""
    torch.manual_seed(0)
    backbone = EVAViT(
        arch=plan.video_arch, img_size=plan.video_img,
        patch_size=16 if plan.dry_run else 14, num_frames=plan.video_frames,
        out_type='avg_featmap', use_fc_norm=True, final_norm=False,
        tuple_output=False, with_cp=not plan.dry_run)
    model = torch.nn.Sequential(
        backbone, torch.nn.Linear(backbone.embed_dims, 400)).to(plan.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    clips = torch.randn(1, 3, plan.video_frames, plan.video_img,
                        plan.video_img, device=plan.device)
    labels = torch.zeros(1, dtype=torch.long, device=plan.device)

    def step() -> None:
        with autocast(plan):
            loss = torch.nn.functional.cross_entropy(model(clips), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak(plan.device)
    times = seconds(step, plan)
    return dict(arch=str(plan.video_arch), frames=plan.video_frames,
                img_size=plan.video_img, clips_per_step=1,
                seconds_per_step=statistics.median(times),
                peak_gib=peak_gib(plan.device))


def check_dist(plan: Plan, out_dir: Path) -> dict:
    """``tools/dist_train.sh CONFIG 1`` on the demo detector."""
    from eva_mm.datasets.synthetic.shapes import generate_demo_shapes
    data = out_dir / 'demo_shapes'
    generate_demo_shapes(str(data), num_train=16, num_val=4)
    work_dir = out_dir / 'dist_train'
    backend = 'gloo' if plan.dry_run else 'nccl'
    root = f'{data}/'
    cmd = [
        'bash', str(ROOT / 'tools/dist_train.sh'),
        str(DEMO_DET_CONFIG), '1', '--work-dir', str(work_dir),
        '--cfg-options', f'train_cfg.max_iters={plan.dist_iters}',
        f'train_cfg.val_interval={plan.dist_iters}',
        f'env_cfg.dist_cfg.backend={backend}',
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.ann_file={root}annotations/instances_val.json',
        f'test_evaluator.ann_file={root}annotations/instances_val.json',
        'default_hooks.logger.interval=1'
    ]
    env = dict(os.environ, PYTHON=sys.executable,
               PORT=os.environ.get('PORT', '29561'))
    start = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True,
                         timeout=600)
    wall = time.perf_counter() - start
    log = run.stdout + run.stderr
    if run.returncode != 0:
        raise RuntimeError(f'dist_train.sh exited {run.returncode}:\n'
                           f'{log[-3000:]}')
    checkpoint = work_dir / f'iter_{plan.dist_iters}.pth'
    if not checkpoint.exists():
        raise RuntimeError(f'dist_train.sh wrote no {checkpoint.name}')
    return dict(backend=backend, iters=plan.dist_iters, wall_seconds=wall,
                checkpoint=checkpoint.name,
                distributed='Distributed training: True' in log)


def _official_run(plan: Plan, model: torch.nn.Module,
                  x: torch.Tensor) -> Tuple[dict, Optional[torch.Tensor]]:
    """One model of the official comparison: its fp32 eval output (for the
    difference), then bf16 forward + backward steps; running out of GPU
    memory is a result, not a failure."""
    from official_eva import output_maps
    try:
        model.eval()
        with torch.no_grad():
            output = output_maps(model(x))[0].float().cpu()
        model.train()

        def step() -> None:
            with autocast(plan):
                maps = output_maps(model(x))
            sum(m.float().mean() for m in maps).backward()
            model.zero_grad(set_to_none=True)

        reset_peak(plan.device)
        times = seconds(step, plan)
        return dict(seconds=statistics.median(times),
                    peak_gib=peak_gib(plan.device)), output
    except torch.cuda.OutOfMemoryError as err:
        return dict(error=f'out of memory: {str(err).splitlines()[0]}'), None


def _official_size(plan: Plan, module: Optional[object], img: int) -> dict:
    """Both models at one image size, one after the other on the device."""
    from official_eva import randomize, same_outputs
    pair = plan.official_pair
    torch.manual_seed(0)
    x = torch.randn(1, 3, img, img, device=plan.device)
    rows: Dict[str, dict] = {}
    outputs: Dict[str, Optional[torch.Tensor]] = {}
    weights = None
    if module is None:
        rows['official'] = dict(status='not run: pass --official-repo DIR')
    else:
        # Every block checkpointed, as the official EVA-g config
        # (use_act_checkpoint=True) and eva_mm's EVA-g configs.
        with torch.device(plan.device):
            official = pair.build_official(module, img, with_cp=True)
        randomize(official)
        rows['official'], outputs['official'] = _official_run(
            plan, official, x)
        weights = pair.eva_mm_weights(official.state_dict(), img)
        del official
        gc.collect()  # nothing of the official model while EVAViT runs
    with torch.device(plan.device):
        ours = pair.build_eva_mm(img, dict(with_cp=True))
    if weights is not None:
        ours.load_state_dict(weights)
    del weights
    if plan.device.type == 'cuda':
        torch.cuda.empty_cache()
    rows['eva_mm'], outputs['eva_mm'] = _official_run(plan, ours, x)
    del ours
    result: Dict[str, object] = dict(rows)
    if outputs.get('official') is not None and \
            outputs['eva_mm'] is not None:
        result['max_abs_diff_fp32'] = same_outputs([outputs['official']],
                                                    [outputs['eva_mm']])
    official_row, ours_row = rows['official'], rows['eva_mm']
    if 'seconds' in official_row and 'seconds' in ours_row:
        result['speed_ratio_official_over_eva_mm'] = (
            official_row['seconds'] / ours_row['seconds'])
        if official_row['peak_gib'] is not None:
            result['memory_ratio_eva_mm_over_official'] = (
                ours_row['peak_gib'] / official_row['peak_gib'])
    return result


def check_official(plan: Plan) -> dict:
    """EVAViT vs the official EVA-01 detection ViT-g, same weights."""
    pair = plan.official_pair
    module = (pair.load_official(plan.official_repo)
              if plan.official_repo else None)
    result: Dict[str, object] = dict(
        pair=pair.name, arch=str(pair.arch), window=pair.window,
        global_blocks=str(pair.global_blocks),
        official_repo=plan.official_repo or 'not given')
    for img in plan.official_imgs:
        result[f'img_{img}'] = _official_size(plan, module, img)
        if plan.device.type == 'cuda':
            torch.cuda.empty_cache()
    return result


# ----------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------
def machine(plan: Plan) -> dict:
    info = dict(python=platform.python_version(), torch=torch.__version__,
                cuda=torch.version.cuda, device=str(plan.device),
                dry_run=plan.dry_run)
    if plan.device.type == 'cuda':
        props = torch.cuda.get_device_properties(plan.device)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30,
                    capability=f'{props.major}.{props.minor}')
    try:
        from mmcv.ops import get_compiling_cuda_version
        info['mmcv_cuda'] = get_compiling_cuda_version()
    except ImportError as err:
        info['mmcv_cuda'] = f'mmcv.ops not importable: {err}'
    return info


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f'{value:.4g}'
    return str(value)


def markdown(results: dict) -> str:
    lines = ['# eva_mm GPU check', '']
    lines += [f'- {key}: {_cell(value)}'
              for key, value in results['machine'].items()]
    for name in SECTIONS:
        if name not in results['sections']:
            continue
        section = results['sections'][name]
        lines += ['', f'## {name}', '', '| measure | value |', '|---|---|']

        def rows(prefix: str, data: dict) -> None:
            for key, value in data.items():
                if isinstance(value, dict):
                    rows(f'{prefix}{key}.', value)
                elif key != 'traceback':
                    lines.append(f'| {prefix}{key} | {_cell(value)} |')

        rows('', section)
    return '\n'.join(lines) + '\n'


def run_sections(plan: Plan, names: Sequence[str], out_dir: Path) -> dict:
    checks: Dict[str, Callable[[], dict]] = dict(
        vit=lambda: check_vit(plan),
        mim=lambda: check_mim(plan),
        det=lambda: check_det(plan),
        seg=lambda: check_seg(plan),
        video=lambda: check_video(plan),
        dist=lambda: check_dist(plan, out_dir),
        official=lambda: check_official(plan))
    results = dict(machine=machine(plan), sections={})
    for name in names:
        print(f'[gpu_check] {name} ...', flush=True)
        start = time.perf_counter()
        try:
            section = checks[name]()
            section['status'] = 'ok'
        except Exception as err:  # one failing task must not hide the others
            section = dict(status='failed', error=f'{type(err).__name__}: '
                           f'{err}', traceback=traceback.format_exc())
            print(section['traceback'], file=sys.stderr, flush=True)
        section['section_seconds'] = time.perf_counter() - start
        results['sections'][name] = section
        print(f'[gpu_check] {name}: {section["status"]} in '
              f'{section["section_seconds"]:.1f} s', flush=True)
        if plan.device.type == 'cuda':
            torch.cuda.empty_cache()
    return results


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', default='work_dirs/gpu_check')
    parser.add_argument('--dry-run', action='store_true',
                        help='tiny models on the CPU: checks the code path')
    parser.add_argument('--only', nargs='+', choices=SECTIONS,
                        default=list(SECTIONS), help='sections to run')
    parser.add_argument(
        '--official-repo', metavar='DIR',
        help='a checkout of https://github.com/baaivision/EVA, for the '
        "'official' section's official side")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    plan = Plan.make(args.dry_run, args.official_repo)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = run_sections(plan, args.only, out_dir)
    (out_dir / 'gpu_check.json').write_text(json.dumps(results, indent=2))
    (out_dir / 'gpu_check.md').write_text(markdown(results))
    failed = [name for name, section in results['sections'].items()
              if section['status'] != 'ok']
    print(f'[gpu_check] wrote {out_dir}/gpu_check.json and gpu_check.md; '
          f'failed: {failed or "none"}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
