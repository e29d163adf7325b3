"""Every paper config builds at full size on the meta device.

The model, optimizer, layer-wise lr decay, schedule, EMA and evaluation of
each config are compared with the recipe documented in its comments (the
official EVA-01 commands, EVA-01/eva/README.md; the EVA-02 ones,
EVA-02/asuka/README.md); learning rates and weight decay per parameter are
recomputed here from the parameter names.
"""
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

import eva_mm  # noqa: F401  (registers eva_mm.* for the configs)
from eva_mm.models import EVAViT
from paper_config_utils import build_on_meta, load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs/classification'
IN21K = 'eva-g-p14_mim-pre_in21k-224px'
IN1K_336 = 'eva-g-p14_mim-in21k-pre_in1k-336px'
IN1K_560 = 'eva-g-p14_mim-in21k-pre_in1k-560px'
# name: img size, classes, peak lr, AdamW betas / eps, layer decay, epochs,
# warm-up epochs, label smoothing, batch augments, (GPUs, batch per GPU),
# EMA momentum.
TRAIN = {
    IN21K: dict(size=224, classes=21841, lr=1e-4, betas=(0.9, 0.98),
                eps=1e-6, decay=0.85, epochs=60, warmup=15, smoothing=0.1,
                augments=[dict(type='CutMix', alpha=1.0)], batch=(64, 64),
                ema=None),
    IN1K_336: dict(size=336, classes=1000, lr=3e-5, betas=(0.9, 0.999),
                   eps=1e-8, decay=0.95, epochs=10, warmup=2, smoothing=0.3,
                   augments=None, batch=(32, 16), ema=1e-4),
    IN1K_560: dict(size=560, classes=1000, lr=3e-5, betas=(0.9, 0.999),
                   eps=1e-8, decay=0.95, epochs=15, warmup=2, smoothing=0.3,
                   augments=None, batch=(32, 16), ema=1e-4),
}
# name suffix: dataset type, data root, evaluator type.
TEST = {
    'imagenet-v2': ('eva_mm.ImageNetV2',
                    'data/imagenet-v2/ImageNetV2-matched-frequency',
                    'Accuracy'),
    'imagenet-real': ('ImageNet', 'data/imagenet', 'eva_mm.ReaLAccuracy'),
    'imagenet-a': ('CustomDataset', 'data/imagenet-a',
                   'eva_mm.ClassSubsetAccuracy'),
    'imagenet-r': ('CustomDataset', 'data/imagenet-r',
                   'eva_mm.ClassSubsetAccuracy'),
    'imagenet-sketch': ('CustomDataset', 'data/imagenet-sketch/sketch',
                        'Accuracy'),
}
NUM_LAYERS = 40 + 2  # embeddings, 40 blocks, everything after the blocks
# EVA-02 (EVA-02/asuka/README.md, "Fine-tuning"): name: preset, classes,
# peak lr, layer decay, epochs, warm-up epochs, label smoothing, drop path,
# (GPUs, batch per GPU, accumulation), EMA momentum, crop scale low end.
# All at 448 px, AdamW (0.9, 0.999) / 1e-8, warm-up from 0, cosine to 0.
EVA02_TRAIN = {
    'eva02-b-p14_mim-pre_in21k-448px':
    dict(arch='eva02-base', timm='eva02_base_patch14_448', classes=21841,
         lr=3e-4, decay=0.7, epochs=40, warmup=1, smoothing=0.1,
         drop_path=0.1, batch=(32, 64, 1), ema=None, scale=0.2),
    'eva02-l-p14_mim-pre_in21k-448px':
    dict(arch='eva02-large', timm='eva02_large_patch14_448', classes=21841,
         lr=2e-4, decay=0.75, epochs=20, warmup=1, smoothing=0.1,
         drop_path=0.15, batch=(64, 16, 1), ema=None, scale=0.2),
    'eva02-l-p14_mim-m38m-pre_in21k-448px':
    dict(arch='eva02-large', timm='eva02_large_patch14_448', classes=21841,
         lr=3e-4, decay=0.75, epochs=30, warmup=1, smoothing=0.1,
         drop_path=0.15, batch=(64, 16, 2), ema=None, scale=0.2),
    'eva02-b-p14_mim-in21k-pre_in1k-448px':
    dict(arch='eva02-base', timm='eva02_base_patch14_448', classes=1000,
         lr=5e-5, decay=0.8, epochs=15, warmup=2, smoothing=0.2,
         drop_path=0.15, batch=(8, 64, 1), ema=1e-4, scale=0.08),
    'eva02-l-p14_mim-in21k-pre_in1k-448px':
    dict(arch='eva02-large', timm='eva02_large_patch14_448', classes=1000,
         lr=2e-5, decay=0.85, epochs=20, warmup=2, smoothing=0.2,
         drop_path=0.15, batch=(32, 16, 1), ema=1e-4, scale=0.08),
    'eva02-b-p14_mim-pre_in1k-448px':
    dict(arch='eva02-base', timm='eva02_base_patch14_448', classes=1000,
         lr=1e-4, decay=0.7, epochs=30, warmup=3, smoothing=0.1,
         drop_path=0.1, batch=(32, 32, 1), ema=1e-4, scale=0.08),
    'eva02-l-p14_mim-pre_in1k-448px':
    dict(arch='eva02-large', timm='eva02_large_patch14_448', classes=1000,
         lr=5e-5, decay=0.8, epochs=30, warmup=3, smoothing=0.2,
         drop_path=0.15, batch=(32, 16, 2), ema=1e-4, scale=0.08),
}


pytestmark = pytest.mark.registry_scope('mmpretrain')


def hand_layer_id(name: str, num_layers: int = NUM_LAYERS) -> int:
    """BEiT/EVA layer ids: embeddings 0, block i is i + 1, the rest last."""
    if name in ('backbone.cls_token', 'backbone.pos_embed'):
        return 0
    match = re.match(r'backbone\.blocks\.(\d+)\.', name)
    return int(match.group(1)) + 1 if match else num_layers - 1


def check_optimizer(model: torch.nn.Module, cfg: Config, want: dict,
                    betas: tuple, eps: float, num_layers: int) -> None:
    """Every trainable parameter's lr (peak x decay ** depth) and weight
    decay (none for 1-D, biases, pos_embed and cls_token), recomputed from
    its name."""
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = optim_wrapper.optimizer.param_groups
    assert type(optim_wrapper.optimizer).__name__ == 'AdamW'
    seen = set()
    for group in groups:
        assert group['betas'] == betas and group['eps'] == eps
        for name_, param in zip(group['param_names'], group['params']):
            layer = hand_layer_id(name_, num_layers)
            assert group['lr'] == pytest.approx(
                want['lr'] * want['decay']**(num_layers - 1 - layer)), name_
            no_decay = param.ndim == 1 or name_.endswith(
                ('.bias', 'pos_embed', 'cls_token'))
            assert group['weight_decay'] == (0. if no_decay else 0.05), name_
            seen.add(name_)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert seen == trainable
    # The embeddings get decay ** (num_layers - 1) of the head's lr.
    assert min(g['lr'] for g in groups) == pytest.approx(
        want['lr'] * want['decay']**(num_layers - 1))


def test_every_config_is_covered() -> None:
    names = {p.stem for p in CONFIG_DIR.glob('*.py')}
    expected = set(TRAIN) | {f'{IN1K_336}_test-{suffix}'
                             for suffix in TEST} | set(EVA02_TRAIN)
    assert names == expected


@pytest.mark.parametrize('name', sorted(TRAIN))
def test_training_config(name: str) -> None:
    cfg, want = load_config(CONFIG_DIR, name), TRAIN[name]
    model = build_on_meta(cfg, MODELS)
    backbone = model.backbone
    assert backbone.pos_embed.is_meta
    # EVA-g/14: 40 blocks of width 1408, ~1.0B parameters (paper, Table 1).
    assert (backbone.embed_dims, len(backbone.blocks)) == (1408, 40)
    assert backbone.patch_size == 14
    assert sum(p.numel() for p in backbone.parameters()) == pytest.approx(
        1.0e9, rel=0.02)
    grid = want['size'] // 14
    assert backbone.pos_embed.shape == (1, 1 + grid * grid, 1408)
    # Mean pooling + fc_norm + linear: no final norm.
    assert backbone.out_type == 'avg_featmap'
    assert backbone.norm is None and backbone.fc_norm is not None
    assert backbone.blocks[-1].drop_path.drop_prob == pytest.approx(0.4)
    assert not any(p.requires_grad for p in backbone.patch_embed.parameters())
    assert model.head.fc.out_features == want['classes']
    assert model.head.loss_module.label_smooth_val == want['smoothing']
    assert cfg.model.get('train_cfg', {}).get('augments') == want['augments']

    check_optimizer(model, cfg, want, want['betas'], want['eps'],
                    NUM_LAYERS)

    assert cfg.train_cfg.max_epochs == want['epochs']
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', want['warmup'])
    assert (cosine.type, cosine.begin, cosine.end) == (
        'CosineAnnealingLR', want['warmup'], want['epochs'])
    ema = [h for h in cfg.get('custom_hooks', []) if h.type == 'EMAHook']
    assert [h.momentum for h in ema] == ([want['ema']] if want['ema'] else [])
    # The official global batch, GPUs x per-GPU x accumulation
    # (EVA-01/eva/README.md: 8*8*64 for IN-21K, 4*8*16 for IN-1K, both
    # update_freq=1), is the base of auto_scale_lr.
    gpus, per_gpu = want['batch']
    accumulation = cfg.optim_wrapper.get('accumulative_counts', 1)
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.auto_scale_lr.base_batch_size == gpus * per_gpu * accumulation
    for loader in ('train_dataloader', 'test_dataloader'):
        pipeline = (cfg.get(loader) or {}).get('dataset', {}).get('pipeline')
        sizes = [t.get('scale', t.get('crop_size')) for t in pipeline or ()
                 if t.type in ('RandomResizedCrop', 'CenterCrop')]
        assert all(size == want['size'] for size in sizes), (loader, sizes)


@pytest.mark.parametrize('name', sorted(EVA02_TRAIN))
def test_eva02_training_config(name: str) -> None:
    import timm
    cfg, want = load_config(CONFIG_DIR, name), EVA02_TRAIN[name]
    model = build_on_meta(cfg, MODELS)
    with torch.device('meta'):
        reference = timm.create_model(want['timm'],
                                      num_classes=want['classes'])
    backbone = model.backbone
    assert backbone.pos_embed.is_meta
    assert cfg.model.backbone.arch == want['arch']
    # timm's EVA-02 448 px classifier (mean pooling + fc_norm, the official
    # fine-tuning model's layout), parameter for parameter.
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters())
    assert backbone.patch_size == 14
    assert backbone.pos_embed.shape == (1, 1 + 32 * 32, backbone.embed_dims)
    assert backbone.out_type == 'avg_featmap'
    assert backbone.norm is None and backbone.fc_norm is not None
    assert backbone.use_rot_pos_emb
    assert backbone.blocks[-1].drop_path.drop_prob == pytest.approx(
        want['drop_path'])
    # stop_grad_conv1=True in the official fine-tuning model.
    assert not any(p.requires_grad for p in backbone.patch_embed.parameters())
    assert model.head.fc.out_features == want['classes']
    assert model.head.loss_module.label_smooth_val == want['smoothing']
    assert cfg.model.get('train_cfg') is None  # no Mixup / CutMix
    check_optimizer(model, cfg, want, (0.9, 0.999), 1e-8,
                    len(backbone.blocks) + 2)
    assert cfg.optim_wrapper.get('clip_grad') is None

    assert cfg.train_cfg.max_epochs == want['epochs']
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == (
        'LinearLR', 1e-8, want['warmup'])
    assert (cosine.type, cosine.begin) == ('CosineAnnealingLR',
                                           want['warmup'])
    # To 0 (eta_min or eta_min_ratio), until the end of training.
    assert not (cosine.get('eta_min') or cosine.get('eta_min_ratio'))
    assert 'end' not in cosine and 'T_max' not in cosine
    ema = [h for h in cfg.get('custom_hooks', []) if h.type == 'EMAHook']
    assert [h.momentum for h in ema] == ([want['ema']] if want['ema'] else [])
    gpus, per_gpu, accumulation = want['batch']
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.optim_wrapper.get('accumulative_counts', 1) == accumulation
    # mmengine scales by GPUs x batch per GPU (no accumulation).
    assert cfg.auto_scale_lr.base_batch_size == gpus * per_gpu
    crops = [t for t in cfg.train_dataloader.dataset.pipeline
             if t.type == 'RandomResizedCrop']
    assert [(t.scale, t.crop_ratio_range) for t in crops] == [
        (448, (want['scale'], 1.0))]
    if want['classes'] == 1000:
        resize, crop = cfg.test_dataloader.dataset.pipeline[1:3]
        assert (resize.scale, resize.edge, crop.crop_size) == (448, 'short',
                                                               448)
    else:
        assert cfg.get('val_dataloader') is None


@pytest.mark.parametrize('suffix', sorted(TEST))
def test_evaluation_config(suffix: str) -> None:
    cfg = load_config(CONFIG_DIR, f'{IN1K_336}_test-{suffix}')
    dataset_type, data_root, evaluator = TEST[suffix]
    dataset = cfg.test_dataloader.dataset
    assert (dataset.type, dataset.data_root) == (dataset_type, data_root)
    assert cfg.test_evaluator.type == evaluator
    assert cfg.test_evaluator.topk == (1, 5)
    # The official evaluation: short edge to 336, center crop 336.
    resize, crop = dataset.pipeline[1], dataset.pipeline[2]
    assert (resize.type, resize.scale, resize.edge) == ('ResizeEdge', 336,
                                                        'short')
    assert (crop.type, crop.crop_size) == ('CenterCrop', 336)
    # ImageNet-V2 resizes bilinear (EVA-01/eva/robustness_dataset.py:39-44,
    # torchvision's default), the others bicubic as ImageNet-1K val
    # (datasets.py:246, interpolation=3).
    assert resize.interpolation == (
        'bilinear' if suffix == 'imagenet-v2' else 'bicubic')
    model = build_on_meta(cfg, MODELS)
    assert model.backbone.pos_embed.shape == (1, 1 + 24 * 24, 1408)
    assert model.head.fc.out_features == 1000


def shrink_pipeline(pipeline: list) -> list:
    """The config's own transforms at the 32 px of the test images."""
    for transform in pipeline:
        if transform.type in ('RandomResizedCrop', 'ResizeEdge'):
            transform.scale = 32
        elif transform.type == 'CenterCrop':
            transform.crop_size = 32
    return pipeline


# The 560 px config only changes sizes and length of the 336 px one; the
# EVA-02 B configs and the Merged-38M one only numbers of the L ones.
@pytest.mark.slow
@pytest.mark.parametrize('name', [
    IN21K, IN1K_336, 'eva02-l-p14_mim-pre_in21k-448px',
    'eva02-l-p14_mim-in21k-pre_in1k-448px'
])
def test_training_config_runs_one_epoch_shrunk(name: str, image_folder,
                                               tmp_path) -> None:
    """The paper config with only the backbone, classes and data shrunk.

    Its pipelines (RandomResizedCrop, RandAugment), batch augments, label
    smoothing, layer-decay optimizer, iteration-based schedule, EMA and
    validation run for one epoch (EVA-02: the warm-up and one cosine epoch)
    on a generated image folder.
    """
    cfg = load_config(CONFIG_DIR, name)
    # The preset's EVA-02 options (none for EVA-g) at a tiny width.
    preset = EVAViT.arch_zoo[cfg.model.backbone.arch]
    cfg.model.backbone.update(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  mlp_hidden_dim=64,
                  **{key: value for key, value in preset.items()
                     if key in EVAViT.ARCH_OPTIONS}),
        img_size=32, patch_size=8, with_cp=False, init_cfg=None)
    cfg.model.head.update(num_classes=5, in_channels=32)
    cfg.data_preprocessor.num_classes = 5
    for loader in ('train_dataloader', 'val_dataloader'):
        if cfg.get(loader) is None:
            continue
        cfg[loader].update(batch_size=5, num_workers=0,
                           persistent_workers=False)
        cfg[loader].dataset = dict(
            type='CustomDataset', data_root=str(image_folder),
            pipeline=shrink_pipeline(cfg[loader].dataset.pipeline))
    # One epoch; one past the warm-up where the cosine runs to the end of
    # training (mmengine needs it to span at least one epoch).
    warmup, cosine = cfg.param_scheduler
    cfg.train_cfg.max_epochs = 1 if 'end' in cosine else warmup.end + 1
    cfg.work_dir = str(tmp_path)
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert (tmp_path / f'epoch_{cfg.train_cfg.max_epochs}.pth').exists()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss))
    if cfg.get('val_dataloader') is not None:
        # Validated on the EMA weights, with top-1 and top-5.
        top5 = runner.message_hub.get_scalar('val/accuracy/top5').current()
        assert top5 == 100.


def test_imagenet_v2_pipeline_gives_torchvision_bilinear_pixels(tmp_path):
    """The V2 config's pipeline against the official transform itself:
    torchvision Resize(336) (bilinear) + CenterCrop(336) on the PIL image
    (EVA-01/eva/robustness_dataset.py:39-44)."""
    import numpy as np
    from mmengine.dataset import Compose
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(0)
    # Smooth content, so that bilinear and bicubic differ visibly.
    y, x = np.mgrid[0:400, 0:500]
    picture = np.stack([
        128 + 100 * np.sin(x / 7.0 + c) * np.cos(y / 5.0) for c in range(3)
    ], axis=-1) + rng.normal(0, 10, (400, 500, 3))
    path = tmp_path / 'v2.png'
    Image.fromarray(picture.clip(0, 255).astype(np.uint8)).save(path)
    official = transforms.Compose(
        [transforms.Resize(336), transforms.CenterCrop(336)])
    expected = np.asarray(official(Image.open(path).convert('RGB')))

    def pixels(name: str) -> np.ndarray:
        cfg = load_config(CONFIG_DIR, name)
        init_default_scope('mmpretrain')
        packed = Compose(cfg.test_dataloader.dataset.pipeline)(
            dict(img_path=str(path)))
        # PackInputs gives (3, H, W) in the loaded BGR order.
        return packed['inputs'].numpy()[::-1].transpose(1, 2, 0)

    assert np.array_equal(pixels(f'{IN1K_336}_test-imagenet-v2'), expected)
    bicubic = pixels(f'{IN1K_336}_test-imagenet-sketch')
    assert np.abs(bicubic.astype(int) - expected).max() > 3
