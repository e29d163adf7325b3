"""The last details of EVA's detectron2 recipe (issue #22, item 3), each
checked against a computation done another way:

- the mask predictor's initialisation, normal(0, 0.001) and zero bias
  (EVA-01/det/detectron2/modeling/roi_heads/mask_head.py:265-269), by the
  statistics of the initialised weights, in the head and in the model of
  every EVA detection config;
- the LSJ crop offset, one uniform draw for both axes
  (detectron2/data/transforms/augmentation_impl.py:320-332), by its joint
  and marginal distributions and by detectron2's formula replayed on the
  same random state, with image, boxes and masks cropped alike;
- the LSJ and test resizes, PIL bilinear as detectron2's ResizeTransform
  (transform.py:99-122), by PIL's own ``Image.resize``.
"""
import math
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS, TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from PIL import Image

import eva_mm  # noqa: F401  (registers eva_mm.* for the configs)
from eva_mm.models.roi_heads import MasknessFCNMaskHead

ROOT = Path(__file__).resolve().parents[2]
COCO = ROOT / 'configs/detection/eva-g-p16_cascade-mask-rcnn_lsj-1024_coco.py'
# Every EVA config with a mask head: the paper configs (EVA-01 and EVA-02;
# the Objects365 ones have none) and the CPU demo.
MASK_CONFIGS = sorted(
    path for path in [*ROOT.glob('configs/detection/*.py'),
                      ROOT / 'configs/demo/eva-demo-p8_cascade-mask-rcnn_'
                      'shapes.py'] if 'objects365' not in path.name)
PREDICTOR_STD = 0.001

pytestmark = pytest.mark.registry_scope('mmdet')


# -- mask predictor initialisation -------------------------------------


def assert_official_predictor(weight: torch.Tensor,
                              bias: torch.Tensor) -> None:
    """normal(0, 0.001) weights and zero bias, up to sampling error.

    The sample std of n normal draws has a relative standard error of
    1 / sqrt(2 n); five of them bound it (0.5% over COCO's 80 x 256
    kernel). Kaiming's fan_out std, sqrt(2 / classes), is over 100 times
    larger.
    """
    n = weight.numel()
    std = weight.std().item()
    assert abs(std / PREDICTOR_STD - 1) < 5 / math.sqrt(2 * n), std
    assert abs(weight.mean().item()) < 5 * PREDICTOR_STD / math.sqrt(n)
    assert torch.equal(bias, torch.zeros_like(bias))


def test_mask_predictor_initialised_as_detectron2() -> None:
    torch.manual_seed(0)
    head = MasknessFCNMaskHead(num_classes=80, norm_cfg=dict(
        type='eva_mm.LN2d', eps=1e-6))
    plain = FCNMaskHead(num_classes=80)
    head.init_weights()
    plain.init_weights()
    assert_official_predictor(head.conv_logits.weight, head.conv_logits.bias)
    # mmdet's own predictor: Kaiming normal, fan_out = 80 x 1 x 1.
    assert plain.conv_logits.weight.std().item() == pytest.approx(
        math.sqrt(2 / 80), rel=0.02)
    # The convs and the deconvolution as detectron2's c2_msra_fill: Kaiming
    # normal over fan_out (out channels x kernel area), zero bias.
    for layer in [*(conv.conv for conv in head.convs), head.upsample]:
        weight = layer.weight
        fan_out = weight.shape[0] * weight[0, 0].numel()
        assert weight.std().item() == pytest.approx(
            math.sqrt(2 / fan_out), rel=0.02)
        assert layer.bias is None or not layer.bias.any()
    # predictor_std=None keeps mmdet's initialisation.
    kept = MasknessFCNMaskHead(num_classes=80, predictor_std=None)
    kept.init_weights()
    assert kept.conv_logits.weight.std().item() == pytest.approx(
        math.sqrt(2 / 80), rel=0.02)
    with pytest.raises(ValueError, match='predictor_std'):
        MasknessFCNMaskHead(predictor_std=0.0)


@pytest.mark.parametrize('config', MASK_CONFIGS, ids=lambda p: p.stem)
def test_every_eva_config_initialises_the_mask_predictor(
        config: Path) -> None:
    """The detector of each config, a tiny backbone instead of its own,
    initialised as the runner does (``model.init_weights()``)."""
    cfg = Config.fromfile(str(config))
    arch = cfg.model.backbone.arch
    eva02 = isinstance(arch, str) and arch.startswith('eva02')
    cfg.model.backbone.update(
        arch='eva02-tiny' if eva02 else 'tiny', img_size=64, window_size=2,
        with_cp=False, init_cfg=None)
    cfg.model.neck.in_channels = 192
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    head = model.roi_head.mask_head
    assert isinstance(head, MasknessFCNMaskHead)
    assert_official_predictor(head.conv_logits.weight, head.conv_logits.bias)


# -- LSJ crop ------------------------------------------------------------


def lsj_transform(kind: str, loader: str = 'train_dataloader',
                  **override: object) -> object:
    """The COCO config's pipeline step of type ``kind``, built in mmdet."""
    cfg = Config.fromfile(str(COCO))
    step, = (t for t in cfg[loader].dataset.pipeline if t.type == kind)
    init_default_scope('mmdet')
    return TRANSFORMS.build(ConfigDict(step, **override))


def crop_offsets(transform: object, shape: tuple, draws: int,
                 seed: int) -> np.ndarray:
    """(offset_h, offset_w) of ``draws`` crops, read off the homography."""
    np.random.seed(seed)
    img = np.zeros((*shape, 1), np.uint8)
    offsets = []
    for _ in range(draws):
        matrix = transform(dict(img=img, img_shape=shape))['homography_matrix']
        offsets.append((-matrix[1, 2], -matrix[0, 2]))
    return np.array(offsets)


def test_lsj_crop_offset_is_one_draw_for_both_axes() -> None:
    crop = lsj_transform('eva_mm.Detectron2RandomCrop')
    size = crop.crop_size[0]
    margin = np.array([300, 100])
    shape = (size + margin[0], size + margin[1])
    offsets = crop_offsets(crop, shape, draws=4000, seed=0)
    # Joint: both offsets are round(margin * u) of one u.
    ratios = offsets / margin
    assert np.all(np.abs(ratios[:, 0] - ratios[:, 1]) <=
                  0.5 / margin[0] + 0.5 / margin[1])
    # Marginals: uniform over [0, margin] (Kolmogorov-Smirnov distance at
    # the 1% level, plus the rounding step).
    for axis in range(2):
        values = np.sort(ratios[:, axis])
        cdf = np.arange(1, len(values) + 1) / len(values)
        distance = np.max(np.abs(cdf - values))
        assert distance < 1.63 / math.sqrt(len(values)) + 1 / margin[axis]
    # Every offset is detectron2's formula (line 328) on the same state:
    # the crop size draw of 'absolute_range' (a range of one) takes none.
    for seed in range(20):
        np.random.seed(seed)
        expected = np.round(np.multiply(margin, np.random.uniform(0.0, 1.0)))
        assert np.array_equal(crop_offsets(crop, shape, 1, seed)[0],
                              expected)

    # mmdet's RandomCrop, one switch away: independent offsets, off the
    # diagonal almost always.
    independent = lsj_transform('eva_mm.Detectron2RandomCrop',
                                type='RandomCrop')
    assert type(independent).__name__ == 'RandomCrop'
    ratios = crop_offsets(independent, shape, draws=500, seed=0) / margin
    assert np.mean(np.abs(ratios[:, 0] - ratios[:, 1]) <= 0.02) < 0.1


@pytest.mark.parametrize('mask_type', ['polygon', 'bitmap'])
def test_lsj_crop_cuts_image_boxes_and_masks_alike(mask_type: str) -> None:
    crop = lsj_transform('eva_mm.Detectron2RandomCrop')
    size = crop.crop_size[0]
    h, w = size + 250, size + 120
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # Rectangles: one inside any crop, two across its possible borders.
    rects = np.array([[300, 280, 700, 600], [0, 0, 200, 150],
                      [w - 90, h - 260, w, h]], dtype=np.float32)
    bitmaps = np.zeros((len(rects), h, w), np.uint8)
    for mask, (x1, y1, x2, y2) in zip(bitmaps, rects.astype(int)):
        mask[y1:y2, x1:x2] = 1
    masks = (PolygonMasks([[np.array([x1, y1, x2, y1, x2, y2, x1, y2],
                                     np.float64)]
                           for x1, y1, x2, y2 in rects], h, w)
             if mask_type == 'polygon' else BitmapMasks(bitmaps, h, w))
    for seed in range(5):
        np.random.seed(seed)
        out = crop(dict(img=img, img_shape=(h, w),
                        gt_bboxes=HorizontalBoxes(rects.copy()),
                        gt_bboxes_labels=np.arange(len(rects)),
                        gt_ignore_flags=np.zeros(len(rects), bool),
                        gt_masks=masks))
        np.random.seed(seed)
        oh, ow = np.round(np.multiply([h - size, w - size],
                                      np.random.uniform(0.0, 1.0)))
        oh, ow = int(oh), int(ow)
        assert np.array_equal(out['img'], img[oh:oh + size, ow:ow + size])
        # recompute_bbox=True: the boxes come from the cropped masks and
        # must be the rectangles moved by the offset and clipped.
        moved = rects - np.array([ow, oh, ow, oh], np.float32)
        moved[:, 0::2] = moved[:, 0::2].clip(0, size)
        moved[:, 1::2] = moved[:, 1::2].clip(0, size)
        keep = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
        np.testing.assert_allclose(out['gt_bboxes'].numpy(), moved[keep])
        assert out['gt_bboxes_labels'].tolist() == np.flatnonzero(
            keep).tolist()
        if mask_type == 'bitmap':
            assert np.array_equal(
                out['gt_masks'].masks,
                bitmaps[keep][:, oh:oh + size, ow:ow + size])


# -- PIL bilinear resizes ------------------------------------------------


def pil_bilinear(img: np.ndarray, shape: tuple) -> np.ndarray:
    """detectron2's ResizeTransform.apply_image on uint8 (transform.py:
    108-117): PIL's own bilinear resize to (h, w)."""
    return np.asarray(Image.fromarray(img).resize((shape[1], shape[0]),
                                                  Image.BILINEAR))


def test_lsj_resize_is_pil_bilinear() -> None:
    resize = lsj_transform('RandomResize')
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    seg = rng.integers(0, 20, (300, 200), dtype=np.uint8)
    polygon = np.array([10.5, 20.0, 150.0, 40.0, 90.0, 280.0])
    seen = set()
    for seed in range(12):
        np.random.seed(seed)
        out = resize(dict(img=img, img_shape=img.shape[:2],
                          gt_seg_map=seg,
                          gt_masks=PolygonMasks([[polygon]], 300, 200)))
        shape = out['img'].shape[:2]
        shrinking = shape[0] < img.shape[0]
        seen.add(shrinking)
        assert np.array_equal(out['img'], pil_bilinear(img, shape))
        # detectron2 resizes segmentation with PIL's nearest
        # (transform.py:125-128) and polygons by new / old size.
        assert np.array_equal(
            out['gt_seg_map'],
            np.asarray(Image.fromarray(seg).resize((shape[1], shape[0]),
                                                   Image.NEAREST)))
        scale = np.tile([shape[1] / 200, shape[0] / 300], 3)
        np.testing.assert_allclose(out['gt_masks'].masks[0][0],
                                   polygon * scale)
        if shrinking:
            # cv2's bilinear (mmcv's default) does not filter: it differs.
            cv2_out = lsj_transform('RandomResize', backend='cv2')
            np.random.seed(seed)
            plain = cv2_out(dict(img=img, img_shape=img.shape[:2]))['img']
            assert not np.array_equal(plain, out['img'])
    assert seen == {True, False}


@pytest.mark.parametrize('size', [(1500, 2000), (200, 300)],
                         ids=['shrink', 'enlarge'])
def test_test_pipeline_resizes_as_pil(size: tuple, tmp_path: Path) -> None:
    """The config's whole test pipeline on an image file."""
    cfg = Config.fromfile(str(COCO))
    init_default_scope('mmdet')
    pipeline = Compose([
        TRANSFORMS.build(t) for t in cfg.test_dataloader.dataset.pipeline
    ])
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    path = tmp_path / 'image.png'
    Image.fromarray(img).save(path)
    packed = pipeline(dict(img_path=str(path), img_id=0, instances=[]))
    # detectron2's ResizeShortestEdge(1024, max_size=1024): the long side to
    # 1024, each side rounded half up (augmentation_impl.py:176-195).
    long_side = cfg.test_dataloader.dataset.pipeline[1].scale[0]
    scale = long_side / max(size)
    shape = tuple(int(side * scale + 0.5) for side in size)
    # LoadImageFromFile gives BGR; PIL resizes each channel alike.
    expected = pil_bilinear(img[..., ::-1], shape)
    inputs = packed['inputs'].permute(1, 2, 0).numpy()
    assert np.array_equal(inputs, expected)
