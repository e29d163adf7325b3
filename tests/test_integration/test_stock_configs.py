"""EVAViT inside the stock configs of mmseg, mmpretrain, mmaction2 and mmdet.

Each test loads a config shipped with the toolbox, adds only
``custom_imports=dict(imports=['eva_mm'])`` and swaps in ``eva_mm.EVAViT``
(plus ``eva_mm.SimpleFPN`` for mmdet, whose stock FPN expects a multi-scale
CNN), then runs one real optimisation step and checks that the backbone
learned from it. Every test runs twice: with EVA-01 and with EVA-02 (the
same class with SwiGLU, sub-LN and RoPE; RoPE per window in mmdet's
windowed blocks).
"""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from eva_mm.models import EVAViT

# A narrow EVAViT whose width matches the stock heads (ViT-B: 768), so that
# the swap needs no head change.
VIT_B_WIDTH_4_LAYERS = dict(
    embed_dims=768, num_layers=4, num_heads=12, mlp_hidden_dim=768)
# EVA-02 variants: the eva02-base preset's options at that width; the
# eva02-tiny preset. Both at patch 16 (the stock inputs are multiples of
# 16; EVA-02's detection variant).
EVA02_OPTIONS = {
    key: value
    for key, value in EVAViT.arch_zoo['eva02-base'].items()
    if key in EVAViT.ARCH_OPTIONS
}
ARCHS = {
    'eva01': dict(vit_b=VIT_B_WIDTH_4_LAYERS, tiny='tiny'),
    'eva02': dict(
        vit_b=dict(VIT_B_WIDTH_4_LAYERS, mlp_hidden_dim=2048,
                   **EVA02_OPTIONS),
        tiny='eva02-tiny'),
}
family = pytest.mark.parametrize('family', sorted(ARCHS))


def _swap(cfg_path: str, family: str, size: str, img_size: int = 64,
          **backbone) -> Config:
    """The toolbox's config with its backbone swapped for EVAViT.

    Args:
        cfg_path: The stock config, ``scope::path``.
        family: ``'eva01'`` or ``'eva02'`` (a key of ``ARCHS``).
        size: ``'vit_b'`` or ``'tiny'``.
        img_size: The input size.
        **backbone: The rest of the EVAViT arguments.

    Returns:
        The config with ``eva_mm`` in its custom imports.
    """
    cfg = get_config(cfg_path)
    cfg.custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)
    cfg.model.backbone = dict(
        type='eva_mm.EVAViT',
        arch=ARCHS[family][size],
        img_size=img_size,
        patch_size=16,
        **backbone)
    return cfg


def _images(num: int, *shape: int) -> list:
    """``num`` random float images of ``shape`` with values in [0, 255)."""
    return [torch.randint(0, 255, shape).float() for _ in range(num)]


def _build(cfg: Config, scope: str) -> torch.nn.Module:
    from mmengine.utils import import_modules_from_strings
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(scope)
    from mmengine.registry import MODELS
    # What mmengine's Runner does with a top-level data_preprocessor.
    if 'data_preprocessor' in cfg:
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def _step_changes_backbone(model: torch.nn.Module, data: dict) -> dict:
    """Two SGD steps; returns the losses and checks the backbone moved.

    Two, because some stock heads (mmpretrain's ViT head) start at zero and
    pass no gradient to the backbone in the first step.
    """
    optim_wrapper = build_optim_wrapper(
        model, dict(optimizer=dict(type='SGD', lr=0.01)))
    before = model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    model.train()
    for _ in range(2):
        losses = model.train_step(copy.deepcopy(data), optim_wrapper)
    after = model.backbone.blocks[0].attn.qkv.weight.detach()
    for name, value in losses.items():
        assert torch.isfinite(value).all(), name
    assert not torch.equal(before, after), 'backbone received no gradient'
    return losses


def _check_family(model: torch.nn.Module, family: str) -> None:
    """The swapped backbone is the EVA generation asked for."""
    backbone = model.backbone
    eva02 = family == 'eva02'
    assert hasattr(backbone.blocks[0].mlp, 'fc1_g') == eva02  # SwiGLU
    assert backbone.use_rot_pos_emb == eva02


pytestmark = pytest.mark.registry_scope('mmengine')


@family
def test_mmseg_upernet_vit_config(family):
    from mmseg.structures import SegDataSample
    cfg = _swap(
        'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py',
        family, 'vit_b', out_type='featmap', out_indices=(0, 1, 2, 3),
        final_norm=False)
    cfg.model.pretrained = None
    cfg.model.data_preprocessor.size = (64, 64)
    model = _build(cfg, 'mmseg')
    _check_family(model, family)

    samples = []
    for i in range(2):
        sample = SegDataSample(metainfo=dict(
            img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 150, (1, 64, 64), generator=torch.
                               Generator().manual_seed(i)))
        samples.append(sample)
    data = dict(inputs=_images(2, 3, 64, 64), data_samples=samples)
    losses = _step_changes_backbone(model, data)
    assert 'decode.loss_ce' in losses and 'aux.loss_ce' in losses


@family
def test_mmpretrain_vit_classifier_config(family):
    from mmpretrain.structures import DataSample
    cfg = _swap('mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py',
                family, 'vit_b', out_type='cls_token')
    model = _build(cfg, 'mmpretrain')
    _check_family(model, family)
    data = dict(
        inputs=_images(2, 3, 64, 64),
        data_samples=[DataSample().set_gt_label(i) for i in (3, 7)])
    losses = _step_changes_backbone(model, data)
    assert 'loss' in losses

    model.eval()
    with torch.no_grad():
        preds = model.val_step(data)
    assert preds[0].pred_score.shape == (1000, )


@family
def test_mmaction2_tsn_recognizer_config(family):
    from mmaction.structures import ActionDataSample
    cfg = _swap('mmaction::recognition/tsn/'
                'tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_'
                'kinetics400-rgb.py',
                family, 'tiny', out_type='featmap', final_norm=True,
                tuple_output=False)
    # TSN's head pools a (B*T, C, H, W) map; only its width follows the
    # backbone.
    cfg.model.cls_head.in_channels = 192
    model = _build(cfg, 'mmaction')
    _check_family(model, family)
    # Two clips of 3 segments of 64x64 RGB frames: (num_clips*T, C, H, W).
    data = dict(
        inputs=_images(2, 3, 3, 64, 64),
        data_samples=[
            ActionDataSample().set_gt_label(torch.tensor([i]))
            for i in (1, 5)
        ])
    losses = _step_changes_backbone(model, data)
    assert 'loss_cls' in losses


@family
def test_mmdet_mask_rcnn_config(family):
    from mmdet.testing import demo_mm_inputs
    cfg = _swap(
        'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
        family,
        'tiny',
        img_size=128,
        out_type='featmap',
        with_cls_token=False,
        final_norm=False,
        window_size=4,
        global_block_indexes=(2, 5, 8, 11),
        # ViTDet's relative positions for EVA-01; EVA-02 has RoPE instead.
        rel_pos='decomposed' if family == 'eva01' else None)
    cfg.model.neck = dict(
        type='eva_mm.SimpleFPN',
        in_channels=192,
        out_channels=256,
        num_outs=5)
    model = _build(cfg, 'mmdet')
    _check_family(model, family)
    packed = demo_mm_inputs(
        batch_size=2, image_shapes=(3, 128, 128), num_items=[3, 2],
        num_classes=80, with_mask=True)
    data = dict(
        inputs=[x.float() for x in packed['inputs']],
        data_samples=packed['data_samples'])
    losses = _step_changes_backbone(model, data)
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(
        losses)
