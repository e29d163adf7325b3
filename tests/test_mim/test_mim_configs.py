"""The MIM configs hold the recipe and agree with themselves."""
from pathlib import Path

import numpy as np
import open_clip
import pytest
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope

import eva_mm  # noqa: F401
from eva_mm.models import EVAViT

CONFIGS = Path(__file__).resolve().parents[2] / 'configs/mim'
RECIPES = sorted(CONFIGS.glob('eva-mim_vit-*.py'))


def _masker(cfg: Config) -> dict:
    # Every MIM config masks with EVA-01's generator, not mmpretrain's
    # BEiTMaskGenerator (exclusive placement bound).
    maskers = [t for t in cfg.train_dataloader.dataset.pipeline
               if 'Mask' in t['type']]
    assert [t['type'] for t in maskers] == ['eva_mm.EVABlockMaskGenerator']
    return maskers[0]


def _check_crop_and_mask(cfg: Config) -> dict:
    """224 px crops (0.2-1, bicubic) and 105 of 256 patches masked in
    blocks of at least 16, aspect 0.3-1/0.3: EVA-01's and EVA-02's."""
    crop = cfg.train_pipeline[1]
    assert (crop.scale, tuple(crop.crop_ratio_range), crop.interpolation) \
        == (224, (0.2, 1.0), 'bicubic')
    masker = _masker(cfg)
    assert (masker.input_size, masker.num_masking_patches,
            masker.min_num_patches, masker.min_aspect) == (16, 105, 16, 0.3)
    return masker


@pytest.mark.parametrize('path', RECIPES, ids=lambda p: p.stem)
def test_recipe_numbers(path):
    cfg = Config.fromfile(str(path))
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, tuple(optimizer.betas),
            optimizer.eps, optimizer.weight_decay) == ('AdamW', 1e-3,
                                                       (0.9, 0.98), 1e-6,
                                                       0.05)
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 1.0
    warmup, cosine = cfg.param_scheduler
    assert warmup.start_factor * optimizer.lr == pytest.approx(1e-6)
    assert (warmup.end, cosine.eta_min, cosine.end) == (2, 1e-5, 150)
    assert warmup.convert_to_iter_based and cosine.convert_to_iter_based
    assert cfg.train_cfg.max_epochs == 150
    # Official global batch: 16 nodes x 8 GPUs x 32 x 1 accumulation step,
    # the base of auto_scale_lr.
    accumulation = cfg.get('strategy', {}).get(
        'gradient_accumulation_steps', 1)
    assert cfg.train_dataloader.batch_size * 16 * 8 * accumulation == 4096
    assert cfg.auto_scale_lr.base_batch_size == 4096
    assert cfg.model.backbone.drop_path_rate == 0.1
    masker = _check_crop_and_mask(cfg)

    # Student, mask and teacher grids and the head's widths agree.
    backbone = cfg.model.backbone
    arch = EVAViT.arch_zoo[backbone.arch]
    assert backbone.img_size // backbone.patch_size == masker.input_size
    teacher = cfg.model.target_generator
    clip_cfg = open_clip.get_model_config(teacher.model_name)
    vision = clip_cfg['vision_cfg']
    assert vision['image_size'] // vision['patch_size'] == masker.input_size
    assert cfg.model.head.in_channels == arch['embed_dims']
    assert cfg.model.head.out_channels == clip_cfg['embed_dim'] == 768
    assert teacher.quick_gelu and teacher.pretrained == 'openai'

    if 'deepspeed' in path.stem:
        strategy = cfg.strategy
        assert cfg.runner_type == 'FlexibleRunner'
        assert strategy.zero_optimization.stage == 1
        assert strategy.gradient_clipping == 3.0
        if path.stem.endswith('fp16'):
            assert dict(strategy.fp16) == dict(
                enabled=True, loss_scale=0, initial_scale_power=16,
                loss_scale_window=500, hysteresis=2, min_loss_scale=1)
        else:
            assert strategy.fp16 is None and strategy.bf16.enabled
    else:
        assert cfg.optim_wrapper.clip_grad.max_norm == 3.0


def test_demo_pipeline_gives_crop_flip_and_mask(tmp_path):
    from PIL import Image
    cfg = Config.fromfile(
        str(CONFIGS / 'eva-mim_demo-tiny-p8_clip-tiny_shapes.py'))
    init_default_scope('mmpretrain')
    path = tmp_path / 'a.png'
    Image.fromarray(np.full((100, 80, 3), 128, np.uint8)).save(path)
    packed = Compose(cfg.train_pipeline)(dict(img_path=str(path)))
    assert tuple(packed['inputs'].shape) == (3, 64, 64)
    assert int(packed['data_samples'].mask.sum()) <= 26
    assert _masker(cfg).num_masking_patches == 26


# ---------------------------------------------------------------- EVA-02
# stem: preset, official global batch (GPUs x per GPU), lr, epochs, drop
# path, data root (EVA-02/asuka/README.md, "Pre-training").
EVA02 = {
    'eva02-mim_vit-tiny-p14_eva-clip-g14_40xb100-240e_in21k':
    ('eva02-tiny', (40, 100), 3e-3, 240, 0.0, 'data/imagenet21k'),
    'eva02-mim_vit-small-p14_eva-clip-g14_40xb100-240e_in21k':
    ('eva02-small', (40, 100), 3e-3, 240, 0.0, 'data/imagenet21k'),
    'eva02-mim_vit-base-p14_eva-clip-g14_32xb64-150e_in21k':
    ('eva02-base', (32, 64), 1.5e-3, 150, 0.0, 'data/imagenet21k'),
    'eva02-mim_vit-large-p14_eva-clip-g14_64xb32-150e_in21k':
    ('eva02-large', (64, 32), 1.5e-3, 150, 0.1, 'data/imagenet21k'),
    'eva02-mim_vit-large-p14_eva-clip-g14_64xb32-56e_merged38m':
    ('eva02-large', (64, 32), 1.5e-3, 56, 0.1, 'data/merged-38m'),
}
# The timm model of each preset, for the parameter count.
TIMM_EVA02 = {
    'eva02-tiny': 'eva02_tiny_patch14_224',
    'eva02-small': 'eva02_small_patch14_224',
    'eva02-base': 'eva02_base_patch14_224',
    'eva02-large': 'eva02_large_patch14_224',
}


def test_every_eva02_config_is_covered():
    assert {p.stem for p in CONFIGS.glob('eva02-*.py')} == set(EVA02)


@pytest.mark.parametrize('name', sorted(EVA02))
def test_eva02_recipe_numbers(name):
    cfg = Config.fromfile(str(CONFIGS / f'{name}.py'))
    arch, (gpus, per_gpu), lr, epochs, drop_path, data_root = EVA02[name]
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, tuple(optimizer.betas),
            optimizer.eps, optimizer.weight_decay) == ('AdamW', lr,
                                                       (0.9, 0.98), 1e-6,
                                                       0.05)
    assert cfg.optim_wrapper.clip_grad.max_norm == 3.0
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 1.0
    warmup, cosine = cfg.param_scheduler
    # One warm-up epoch from 1e-6, cosine to 1e-5 until the last epoch.
    assert warmup.start_factor * lr == pytest.approx(1e-6)
    assert (warmup.end, cosine.begin, cosine.eta_min) == (1, 1, 1e-5)
    assert 'end' not in cosine and 'T_max' not in cosine
    assert warmup.convert_to_iter_based and cosine.convert_to_iter_based
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.auto_scale_lr.base_batch_size == gpus * per_gpu
    assert cfg.train_dataloader.dataset.data_root == data_root
    _check_crop_and_mask(cfg)
    model = cfg.model
    assert (model.backbone.arch, model.backbone.drop_path_rate) == (
        arch, drop_path)
    assert model.head.in_channels == EVAViT.arch_zoo[arch]['embed_dims']
    assert model.head.out_channels == 1024
    # EVA-02's init: the student's own, a Xavier-normal head.
    assert (model.init_std, model.backbone.init_mode,
            model.patch_embed_grad_scale) == (None, 'eva02-mim', 0.1)
    assert (model.head.init_cfg.type,
            model.head.init_cfg.distribution) == ('Xavier', 'normal')
    teacher = model.target_generator
    assert dict(teacher) == dict(
        type='eva_mm.OpenCLIPTeacher', model_name='EVA01-g-14',
        pretrained='laion400m_s11b_b41k')
    assert 'laion400m_s11b_b41k' in open_clip.list_pretrained_tags_by_model(
        'EVA01-g-14')


@pytest.mark.registry_scope('mmpretrain')
@pytest.mark.parametrize('name', sorted(EVA02))
def test_eva02_config_builds_full_size_on_meta(name):
    import timm
    import torch
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(str(CONFIGS / f'{name}.py'))
    arch = EVA02[name][0]
    # The teacher's weights are a download; the meta build needs none.
    cfg.model.target_generator.pretrained = None
    init_default_scope('mmpretrain')
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
        reference = timm.create_model(TIMM_EVA02[arch], num_classes=0)
    student, teacher = model.backbone, model.target_generator
    assert student.pos_embed.is_meta and student.mask_token is not None
    # The student is timm's EVA-02 of its size plus the mask token.
    assert sum(p.numel() for p in student.parameters()) == sum(
        p.numel() for p in reference.parameters()) + student.embed_dims
    assert student.patch_size == 14
    drop_path = EVA02[name][4]
    if drop_path:
        assert student.blocks[-1].drop_path.drop_prob == pytest.approx(
            drop_path)
    # The EVA-CLIP-g/14 teacher: 1.0B parameters, 1024-d targets on the
    # student's 16 x 16 grid.
    assert teacher.out_channels == model.head.fc.out_features == 1024
    assert teacher.patch_grid == (16, 16) == (_masker(cfg).input_size, ) * 2
    assert sum(p.numel() for p in teacher.parameters()) == pytest.approx(
        1.0e9, rel=0.02)


@pytest.mark.slow
@pytest.mark.registry_scope('mmpretrain')
@pytest.mark.parametrize('name', sorted(EVA02))
def test_eva02_config_trains_two_iterations_shrunk(name, tmp_path):
    """The config with the student's widths, the teacher (a random timm
    EVA-02-Ti tower, as open_clip builds EVA-CLIP towers) and the images
    shrunk to 56 px (a 4 x 4 grid): its pipeline, masking, EVA-02 init,
    optimizer and schedule run for one warm-up and one cosine iteration."""
    import torch
    from mmengine.runner import Runner
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (70, 60, 3), np.uint8)).save(
            tmp_path / f'{i}.png')
    cfg = Config.fromfile(str(CONFIGS / f'{name}.py'))
    preset = EVAViT.arch_zoo[cfg.model.backbone.arch]
    cfg.model.backbone.update(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  mlp_hidden_dim=85,
                  **{key: value for key, value in preset.items()
                     if key in EVAViT.ARCH_OPTIONS}),
        img_size=56)
    cfg.model.head.update(in_channels=32, out_channels=16)
    cfg.model.target_generator = dict(
        type='eva_mm.OpenCLIPTeacher',
        model_cfg=dict(embed_dim=16, vision_cfg=dict(
            timm_model_name='eva02_tiny_patch14_224', timm_pool='token',
            timm_proj=None)),
        image_size=56)
    loader = cfg.train_dataloader
    for transform in loader.dataset.pipeline:
        if transform.type == 'RandomResizedCrop':
            transform.scale = 56
        elif transform.type == 'eva_mm.EVABlockMaskGenerator':
            transform.update(input_size=4, num_masking_patches=6,
                             min_num_patches=2)
    loader.update(batch_size=4, num_workers=0, persistent_workers=False,
                  pin_memory=False)
    loader.dataset.data_root = str(tmp_path)
    cfg.train_cfg.max_epochs = 2
    cfg.work_dir = str(tmp_path / 'work')
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    before = runner.model.backbone.blocks[0].mlp.fc1_g.weight.clone()
    runner.train()
    assert runner.iter == 2
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert np.isfinite(loss)
    assert not torch.equal(before,
                           runner.model.backbone.blocks[0].mlp.fc1_g.weight)
    assert runner.model.target_generator.patch_grid == (4, 4)
