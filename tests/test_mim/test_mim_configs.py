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
    crop = cfg.train_pipeline[1]
    assert (crop.scale, tuple(crop.crop_ratio_range), crop.interpolation) \
        == (224, (0.2, 1.0), 'bicubic')
    masker = _masker(cfg)
    assert (masker.input_size, masker.num_masking_patches,
            masker.min_num_patches, masker.min_aspect) == (16, 105, 16, 0.3)

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
