"""The detection slice: demo data, SimpleFPN and Cascade Mask R-CNN configs.

Everything runs on CPU at 64 px with a 2-block EVAViT so that the file,
including a short training run and a COCO evaluation through mmengine's
Runner, takes well under a minute.
"""
import filecmp
import json
import math
import os
import os.path as osp
from typing import Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.runner import Runner
from mmpretrain.models.utils import LayerNorm2d as MMPretrainLayerNorm2d
from pycocotools.coco import COCO

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.datasets.synthetic import (DEMO_SHAPES_CLASSES,
                                       DEMO_SHAPES_PALETTE,
                                       generate_demo_shapes)
from eva_mm.models.layers import rel_pos_attention
from eva_mm.models.layers.norm import LayerNorm2d
from eva_mm.models.necks import SimpleFPN

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE_CONFIG = osp.join(ROOT, 'configs', '_base_', 'models',
                       'cascade-mask-rcnn_eva-vit_simple-fpn.py')
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo',
                       'eva-demo-p8_cascade-mask-rcnn_shapes.py')
TINY_SET = dict(num_train=8, num_val=4, img_size=64, seed=3)


@pytest.fixture(scope='module')
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> str:
    """8 train and 4 val images of 64 px, shared by the tests below."""
    root = str(tmp_path_factory.mktemp('shapes'))
    generate_demo_shapes(root, **TINY_SET)
    return root


def test_generator_is_deterministic(tiny_set: str, tmp_path) -> None:
    again = str(tmp_path / 'again')
    generate_demo_shapes(again, **TINY_SET)
    for rel in ('annotations/instances_train.json',
                'annotations/instances_val.json', 'train/000005.png',
                'val/000003.png'):
        assert filecmp.cmp(
            osp.join(tiny_set, rel), osp.join(again, rel), shallow=False)
    other_seed = str(tmp_path / 'other')
    generate_demo_shapes(other_seed, **dict(TINY_SET, seed=4))
    assert not filecmp.cmp(
        osp.join(tiny_set, 'train/000000.png'),
        osp.join(other_seed, 'train/000000.png'),
        shallow=False)


def test_generator_is_idempotent(tmp_path) -> None:
    root = str(tmp_path)
    ann_files = generate_demo_shapes(root, **TINY_SET)
    stamp = os.stat(ann_files['train']).st_mtime_ns
    assert generate_demo_shapes(root, **TINY_SET) == ann_files
    assert os.stat(ann_files['train']).st_mtime_ns == stamp
    # Other parameters redraw the set and leave no stale image behind.
    generate_demo_shapes(root, **dict(TINY_SET, num_train=3))
    assert sorted(os.listdir(osp.join(root, 'train'))) == [
        '000000.png', '000001.png', '000002.png'
    ]
    with open(ann_files['train']) as f:
        assert len(json.load(f)['images']) == 3


@pytest.mark.parametrize('split', ['train', 'val'])
def test_generator_writes_valid_coco(tiny_set: str, split: str) -> None:
    coco = COCO(osp.join(tiny_set, 'annotations', f'instances_{split}.json'))
    names = [coco.cats[i]['name'] for i in sorted(coco.cats)]
    assert tuple(names) == DEMO_SHAPES_CLASSES
    assert len(coco.imgs) == TINY_SET[f'num_{split}']
    for img_id, info in coco.imgs.items():
        assert osp.isfile(osp.join(tiny_set, split, info['file_name']))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert anns, 'every image has at least one shape'
        union = np.zeros((info['height'], info['width']), dtype=np.int32)
        for ann in anns:
            mask = coco.annToMask(ann)
            assert mask.sum() == pytest.approx(ann['area'], rel=1e-6)
            x, y, w, h = ann['bbox']
            ys, xs = np.nonzero(mask)
            # Rasterised pixels lie in the box up to the pixel they touch.
            assert xs.min() >= math.floor(x) and xs.max() <= math.ceil(x + w)
            assert ys.min() >= math.floor(y) and ys.max() <= math.ceil(y + h)
            assert 0 <= x and x + w <= info['width']
            assert 0 <= y and y + h <= info['height']
            union += mask
        assert union.max() == 1, 'shapes do not overlap'


def test_layer_norm_2d_matches_per_pixel_layer_norm() -> None:
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 5, 7)
    expected = F.layer_norm(
        x.permute(0, 2, 3, 1), (6, ), norm.weight, norm.bias,
        norm.eps).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)
    built = MMENGINE_MODELS.build(dict(type='eva_mm.LN2d', num_channels=6))
    assert isinstance(built, LayerNorm2d)
    # mmpretrain's layer, contiguous out, ViTDet's eps by default, and
    # named 'ln' by mmcv (the converters' key names depend on it).
    assert isinstance(built, MMPretrainLayerNorm2d)
    assert built.eps == 1e-6 and norm(x).is_contiguous()
    name, layer = build_norm_layer(dict(type='eva_mm.LN2d', eps=1e-6), 6)
    assert name == 'ln' and isinstance(layer, LayerNorm2d)


@pytest.mark.parametrize(
    'scale_factors, num_outs, patch_size',
    [((4.0, 2.0, 1.0, 0.5), 5, 16), ((2.0, 1.0, 0.5), 4, 8),
     ((1.0, ), 3, 16), ((8.0, 0.25), 2, 16)])
def test_simple_fpn_levels(scale_factors: Sequence[float], num_outs: int,
                           patch_size: int) -> None:
    image = (128, 64)
    grid = (image[0] // patch_size, image[1] // patch_size)
    neck = MMENGINE_MODELS.build(
        dict(
            type='eva_mm.SimpleFPN',
            in_channels=32,
            out_channels=16,
            scale_factors=scale_factors,
            num_outs=num_outs))
    assert isinstance(neck, SimpleFPN)
    outs = neck((torch.randn(2, 32, *grid), ))
    assert len(outs) == num_outs
    strides = [patch_size / s for s in scale_factors]
    while len(strides) < num_outs:
        strides.append(strides[-1] * 2)
    for out, stride in zip(outs, strides):
        assert out.shape == (2, 16, math.ceil(image[0] / stride),
                             math.ceil(image[1] / stride))
    # Every level is normalised per pixel by its last LN2d, then P6 pools.
    assert outs[0].mean(dim=1).abs().max() < 1e-4
    sum(out.sum() for out in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())


def test_simple_fpn_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match='powers of two'):
        SimpleFPN(8, scale_factors=(3.0, ), num_outs=1)
    with pytest.raises(ValueError, match='finest'):
        SimpleFPN(8, scale_factors=(1.0, 2.0), num_outs=2)
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFPN(8, scale_factors=(2.0, 1.0), num_outs=1)
    with pytest.raises(ValueError, match='input channels'):
        SimpleFPN(8, scale_factors=(1.0, ))((torch.randn(1, 4, 2, 2), ))


def tiny_demo_config(data_root: str, work_dir: str) -> Config:
    """The demo config at 64 px with a 2-block backbone, for 4 iterations."""
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.work_dir = work_dir
    cfg.model.backbone.img_size = TINY_SET['img_size']
    cfg.model.backbone.arch.num_layers = 2
    cfg.model.backbone.global_block_indexes = (1, )
    ann_val = osp.join(data_root, 'annotations', 'instances_val.json')
    size = TINY_SET['img_size']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
        for transform in cfg[loader].dataset.pipeline:
            if transform.type == 'Resize':
                transform.scale = (size, size)
    cfg.train_dataloader.batch_size = 2
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = ann_val
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 4
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=4)
    ]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 4
    return cfg


def test_configs_build() -> None:
    base = Config.fromfile(BASE_CONFIG)
    with torch.device('meta'):
        # EVA-B at 1024 px is large; meta tensors check the wiring only.
        model = MMDET_MODELS.build(base.model)
    assert type(model.backbone).__name__ == 'EVAViT'
    assert model.backbone.embed_dims == base.model.neck.in_channels
    assert len(model.roi_head.bbox_head) == 3
    assert model.rpn_head.prior_generator.strides == [(s, s) for s in
                                                      (4, 8, 16, 32, 64)]

    demo = Config.fromfile(DEMO_CONFIG)
    metainfo = demo.train_dataloader.dataset.metainfo
    assert tuple(metainfo.classes) == DEMO_SHAPES_CLASSES
    assert [tuple(c) for c in metainfo.palette] == list(DEMO_SHAPES_PALETTE)
    demo_model = MMDET_MODELS.build(demo.model)
    demo_model.eval()
    feats = demo_model.extract_feat(torch.zeros(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    assert [f.shape[1] for f in feats] == [demo.channels] * 4


def test_base_config_heads_train_and_predict() -> None:
    """The base config's LN2d conv heads, on a narrow backbone and few RoIs."""
    cfg = Config.fromfile(BASE_CONFIG)
    cfg.model.backbone.update(
        arch=dict(
            embed_dims=64, num_layers=4, num_heads=2, mlp_hidden_dim=128),
        img_size=128,
        window_size=4)
    cfg.model.neck.in_channels = 64
    for stage in cfg.model.train_cfg.rcnn:
        stage.sampler.num = 16
    cfg.model.test_cfg.rpn.max_per_img = 10
    model = MMDET_MODELS.build(cfg.model)
    model.init_weights()
    packed = demo_mm_inputs(
        batch_size=1, image_shapes=[(3, 128, 128)], num_items=[2],
        num_classes=80, with_mask=True)
    data = model.data_preprocessor(packed, True)
    total, log_vars = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(total)
    assert {'loss_rpn_cls', 'loss_mask', 's2.loss_bbox'} <= set(log_vars)
    total.backward()
    assert model.roi_head.bbox_head[2].shared_convs[0].ln.weight.grad \
        is not None
    model.eval()
    with torch.no_grad():
        result = model(**model.data_preprocessor(packed), mode='predict')[0]
    pred = result.pred_instances
    assert pred.masks.shape[1:] == (128, 128)
    assert len(pred.bboxes) == len(pred.scores) == len(pred.masks)


@pytest.mark.slow
def test_cascade_mask_rcnn_trains_and_evaluates(tiny_set: str,
                                                tmp_path) -> None:
    cfg = tiny_demo_config(tiny_set, str(tmp_path))
    runner = Runner.from_cfg(cfg)
    runner.train()
    hub = runner.message_hub
    loss = hub.get_scalar('train/loss').current()
    assert math.isfinite(loss) and loss > 0
    for key in ('loss_rpn_cls', 's0.loss_cls', 's2.loss_bbox', 'loss_mask'):
        assert math.isfinite(hub.get_scalar(f'train/{key}').current()), key
    assert osp.isfile(osp.join(str(tmp_path), 'iter_4.pth'))
    metrics = runner.test()
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
                'coco/segm_mAP_50'):
        assert key in metrics
        assert 0.0 <= metrics[key] <= 1.0


@pytest.mark.slow
def test_demo_detector_trains_and_tests_with_a_compiled_backbone(
        tiny_set: str, tmp_path, monkeypatch) -> None:
    """``model.backbone.compile=True``: a training run and a test through
    mmengine's Runner, the backbone under ``torch.compile`` (issue #20), its
    attention on the blocked kernel that real sizes take on the CPU."""
    monkeypatch.setattr(rel_pos_attention, '_DIRECT_MAX_LOGITS', 0)
    torch._dynamo.reset()
    cfg = tiny_demo_config(tiny_set, str(tmp_path))
    cfg.model.backbone.compile = True
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 2
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert math.isfinite(runner.message_hub.get_scalar(
        'train/loss').current())
    metrics = runner.test()
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    backbone = runner.model.backbone
    assert backbone._compiled_call_impl is not None
    # The compiled forward computes what the plain one does.
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        compiled, eager = backbone(x)[0], backbone.forward(x)[0]
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
