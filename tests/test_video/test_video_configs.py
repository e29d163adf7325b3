"""The paper's video configs: the giant model builds (meta device) with the
official numbers, and each config trains one iteration once shrunk with the
options ``tools/train.py --cfg-options`` would pass."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from .moving_shapes import generate

ROOT = Path(__file__).parents[2]
CONFIGS = {
    'k722': 'eva-g-p14_k722-intermediate-ft_8x224.py',
    'k400': 'eva-g-p14_k722-pre_k400-ft_16x224.py',
    'k600': 'eva-g-p14_k722-pre_k600-ft_16x224.py',
    'k700': 'eva-g-p14_k722-pre_k700-ft_16x224.py',
}
# name: (frames, classes, drop path, lr, layer decay, epochs)
RECIPES = {
    'k722': (8, 722, 0.3, 8e-6, 1.0, 40),
    'k400': (16, 400, 0.2, 1e-6, 0.95, 1),
    'k600': (16, 600, 0.2, 1e-6, 0.95, 2),
    'k700': (16, 700, 0.2, 1e-6, 0.95, 2),
}
# name: (GPUs, clips per GPU, accumulation steps) of the official runs
# (EVA-01/video/configs/*.yaml, scripts/run_k*_ft.sh, logs/video/*.txt).
BATCHES = {
    'k722': (128, 2, 1),
    'k400': (64, 1, 4),
    'k600': (64, 1, 4),
    'k700': (64, 1, 4),
}
# Not from the paper: EVA-01's K-722 recipe on EVA-02-L, RoPE off.
EVA02 = {'eva02-k722': 'eva02-l-p14_k722-intermediate-ft_8x224.py'}
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


def _load(name: str) -> Config:
    return Config.fromfile(
        str(ROOT / 'configs/video' / {**CONFIGS, **EVA02}[name]))


pytestmark = pytest.mark.registry_scope('mmaction')


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_paper_config_builds_giant_on_meta(name):
    cfg = _load(name)
    frames, classes, drop_path, lr, decay, epochs = RECIPES[name]
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.lr, optimizer.betas, optimizer.weight_decay) == (
        lr, (0.9, 0.98), 0.05)
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == decay
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.model.cls_head.label_smooth_eps == 0.1
    samplers = [t for t in cfg.test_dataloader.dataset.pipeline
                if t['type'] == 'eva_mm.TSNSample']
    assert samplers[0].clip_len == frames and samplers[0].num_views == 4
    assert any(t['type'] == 'ThreeCrop'
               for t in cfg.test_dataloader.dataset.pipeline)
    train = {t['type']: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['eva_mm.TSNSample'].clip_len == frames
    assert train['MultiScaleCrop'].scales == (1, 0.875, 0.75, 0.66)
    assert 'RandomResizedCrop' not in train
    assert train['eva_mm.RandomGrayscale'].prob == 0.2
    jitter = train['RandomApply']
    assert jitter.prob == 0.8 and jitter.transforms == [
        dict(type='eva_mm.ColorJitter', brightness=0.4, contrast=0.4,
             saturation=0.2, hue=0.1, per_frame=True)]
    preprocessor = cfg.model.data_preprocessor
    assert (preprocessor.mean, preprocessor.std) == (IMAGENET_MEAN,
                                                     IMAGENET_STD)
    # Mixup 0.8 / CutMix 1.0 (one of the two per batch) for K-722 only.
    if name == 'k722':
        blending = preprocessor.blending
        assert blending.probs == [0.5, 0.5]
        assert [(a.type, a.alpha, a.num_classes)
                for a in blending.augments] == [
                    ('MixupBlending', 0.8, 722), ('CutmixBlending', 1.0, 722)]
    else:
        assert 'blending' not in preprocessor
    # The official global batch, and the lr scaling based on it.
    gpus, per_gpu, accumulation = BATCHES[name]
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.optim_wrapper.get('accumulative_counts', 1) == accumulation
    assert gpus * per_gpu * accumulation == 256
    # mmengine's auto_scale_lr counts GPUs x clips per GPU only.
    assert cfg.auto_scale_lr.base_batch_size == gpus * per_gpu

    import eva_mm  # noqa: F401  (registers the eva_mm scope)
    init_default_scope('mmaction')
    from mmaction.registry import MODELS
    cfg.model.backbone.init_cfg = None
    # Mixup/CutMix hold no weights; their Beta distributions cannot be built
    # on the meta device.
    cfg.model.data_preprocessor.pop('blending', None)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert backbone.patch_embed.proj.weight.shape == (1408, 3, 1, 14, 14)
    assert backbone.pos_embed.shape == (1, 1 + frames * 16 * 16, 1408)
    assert backbone.blocks[-1].drop_path.drop_prob == pytest.approx(
        drop_path)
    assert model.cls_head.fc_cls.out_features == classes
    # The official fp32 LayerNorms and q.k^T/softmax (beit.py:44-72, 135).
    block = backbone.blocks[0]
    assert block.norm1.fp32 and block.norm2.fp32 and backbone.fc_norm.fp32
    assert block.attn.fp32_attention
    params = sum(p.numel() for p in model.parameters())
    # EVA-g/14: about one billion parameters.
    assert 0.95e9 < params < 1.05e9


def _shrink_options(shapes: Path) -> dict:
    """What ``--cfg-options`` would pass to run a config on CPU."""
    options = {
        # Plain values only, as on a command line.
        'model.backbone.arch': 'tiny',
        # A 4 x 4 patch grid at 224 px keeps the clips cheap.
        'model.backbone.patch_size': 56,
        'model.backbone.init_cfg': None,
        'model.backbone.with_cp': False,
        'model.cls_head.in_channels': 192,
        'load_from': None,
        'train_dataloader.batch_size': 1,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        # The first video only: one iteration per epoch.
        'train_dataloader.dataset.indices': 1,
        'train_dataloader.dataset.ann_file': str(shapes / 'train_list.txt'),
        'train_dataloader.dataset.data_prefix.video': str(shapes / 'videos'),
        # The runner builds the validation loader even when it never runs.
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'val_dataloader.dataset.ann_file': str(shapes / 'val_list.txt'),
        'val_dataloader.dataset.data_prefix.video': str(shapes / 'videos'),
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 100,
        'optim_wrapper.optimizer.lr': 1e-3,
    }
    return options


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CONFIGS) + sorted(EVA02))
def test_paper_config_trains_one_iteration_shrunk(name, tmp_path_factory):
    shapes = tmp_path_factory.getbasetemp() / 'config_shapes'
    if not shapes.exists():
        generate(shapes, train_per_class=1, val_per_class=1)
    cfg = _load(name)
    cfg.merge_from_dict(_shrink_options(shapes))
    if name in EVA02:
        cfg.merge_from_dict({'model.backbone.arch': 'eva02-tiny'})
    cfg.work_dir = str(tmp_path_factory.mktemp(name))
    runner = Runner.from_cfg(cfg)
    before = runner.model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    runner.train()
    assert runner.iter == 1
    assert not torch.equal(before,
                           runner.model.backbone.blocks[0].attn.qkv.weight)


def test_eva02_config_is_the_eva01_recipe_on_eva02_large():
    eva02, eva01 = _load('eva02-k722'), _load('k722')
    # Everything but the backbone's size, its weights and RoPE, and the
    # head's width is EVA-01's K-722 recipe.
    backbone = eva02.model.backbone
    assert (backbone.arch, backbone.use_rot_pos_emb) == ('eva02-large',
                                                         False)
    assert eva02.model.cls_head.in_channels == 1024
    for cfg in (eva01, eva02):
        for key in ('arch', 'use_rot_pos_emb', 'init_cfg'):
            cfg.model.backbone.pop(key, None)
        cfg.model.cls_head.pop('in_channels')
        cfg.pop('pretrained')
    assert eva02.to_dict() == eva01.to_dict()

    import eva_mm  # noqa: F401  (registers the eva_mm scope)
    init_default_scope('mmaction')
    from mmaction.registry import MODELS
    cfg = _load('eva02-k722')
    cfg.model.backbone.init_cfg = None
    cfg.model.data_preprocessor.pop('blending', None)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert not backbone.use_rot_pos_emb
    assert hasattr(backbone.blocks[0].mlp, 'fc1_g')  # EVA-02's SwiGLU
    assert backbone.patch_embed.proj.weight.shape == (1024, 3, 1, 14, 14)
    assert backbone.pos_embed.shape == (1, 1 + 8 * 16 * 16, 1024)
    assert model.cls_head.fc_cls.out_features == 722
    # EVA-02-L: about 304M parameters (EVA-02/asuka/README.md), with a
    # space-time position embedding 8 times the image one.
    params = sum(p.numel() for p in backbone.parameters())
    assert params - 7 * 16 * 16 * 1024 == pytest.approx(304e6, rel=0.01)
    # RoPE cannot be switched on for video: the refusal names the fix.
    cfg.model.backbone.use_rot_pos_emb = True
    with pytest.raises(ValueError, match='use_rot_pos_emb'):
        with torch.device('meta'):
            MODELS.build(cfg.model)
