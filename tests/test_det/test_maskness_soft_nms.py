"""EVA's test-time settings: maskness rescoring and linear soft-NMS."""
import math
import os.path as osp
from typing import Any, List

import pytest
import torch
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.structures.bbox import bbox2roi
from mmengine.config import Config, ConfigDict
from mmengine.structures import InstanceData

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.models.roi_heads import MasknessFCNMaskHead

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE_CONFIG = osp.join(ROOT, 'configs', '_base_', 'models',
                       'cascade-mask-rcnn_eva-vit_simple-fpn.py')
# Unscoped type names are mmdet's, whatever scope an earlier test left.
pytestmark = pytest.mark.registry_scope('mmdet')
META = dict(img_shape=(32, 32), ori_shape=(32, 32), scale_factor=(1.0, 1.0))
TEST_CFG = ConfigDict(mask_thr_binary=0.5)


def _logit(prob: torch.Tensor) -> torch.Tensor:
    return torch.log(prob / (1 - prob))


def _crafted_probs() -> torch.Tensor:
    """RoI mask probabilities of 3 detections x 2 classes on a 4x4 grid.

    Detection 0 (class 1): above 0.5 are 0.9, 0.8 and 0.6; one pixel is
    exactly 0.5 and does not count. Detection 1 (class 0): one pixel 0.95.
    Detection 2 (class 0): nothing above 0.5. The other class's channel is
    high everywhere and must be ignored.
    """
    probs = torch.full((3, 2, 4, 4), 0.1)
    probs[0, 0] = 0.99
    probs[0, 1, 0, :4] = torch.tensor([0.9, 0.8, 0.6, 0.5])
    probs[1, 1] = 0.99
    probs[1, 0] = 0.3
    probs[1, 0, 2, 2] = 0.95
    probs[2, 1] = 0.99
    probs[2, 0] = 0.4
    return probs


def _detections() -> InstanceData:
    return InstanceData(
        bboxes=torch.tensor([[2., 2., 14., 14.], [10., 4., 30., 20.],
                             [0., 16., 12., 30.]]),
        labels=torch.tensor([1, 0, 0]),
        scores=torch.tensor([0.9, 0.8, 0.7]))


def _heads(**kwargs: Any) -> List[FCNMaskHead]:
    common = dict(num_convs=0, in_channels=4, num_classes=2, **kwargs)
    return [
        MasknessFCNMaskHead(maskness_thr=0.5, **common),
        MasknessFCNMaskHead(rescore_by_maskness=False, **common),
        FCNMaskHead(**common)
    ]


@pytest.mark.parametrize('activate_map', [False, True])
def test_maskness_rescoring_on_crafted_masks(activate_map: bool) -> None:
    probs = _crafted_probs()
    preds = probs if activate_map else _logit(probs)
    rescoring, _, plain = _heads()
    out = rescoring.predict_by_feat([preds.clone()], [_detections()], [META],
                                    TEST_CFG, activate_map=activate_map)[0]
    ref = plain.predict_by_feat([preds.clone()], [_detections()], [META],
                                TEST_CFG, activate_map=activate_map)[0]
    maskness = [(0.9 + 0.8 + 0.6) / 3, 0.95, 0.0]
    new_scores = [0.9 * maskness[0], 0.8 * maskness[1], 0.7 * maskness[2]]
    # 0.8 * 0.95 = 0.76 now outranks 0.9 * 0.767 = 0.69: re-sorted.
    order = [1, 0, 2]
    torch.testing.assert_close(out.scores,
                               torch.tensor([new_scores[i] for i in order]))
    assert out.labels.tolist() == [0, 1, 0]
    assert torch.equal(out.masks, ref.masks[order])
    assert torch.equal(out.bboxes, ref.bboxes[order])


def test_class_agnostic_masks() -> None:
    probs = _crafted_probs()[torch.arange(3), [1, 0, 0]][:, None]
    rescoring = _heads(class_agnostic=True)[0]
    out = rescoring.predict_by_feat([_logit(probs)], [_detections()], [META],
                                    TEST_CFG)[0]
    torch.testing.assert_close(
        out.scores, torch.tensor([0.8 * 0.95, 0.9 * 2.3 / 3, 0.0]))


def test_switched_off_is_fcn_mask_head() -> None:
    _, off, plain = _heads()
    preds = _logit(_crafted_probs())
    out = off.predict_by_feat([preds.clone()], [_detections()], [META],
                              TEST_CFG)[0]
    ref = plain.predict_by_feat([preds.clone()], [_detections()], [META],
                                TEST_CFG)[0]
    assert torch.equal(out.scores, torch.tensor([0.9, 0.8, 0.7]))
    assert torch.equal(out.masks, ref.masks)
    assert torch.equal(out.labels, ref.labels)
    with pytest.raises(ValueError, match='maskness_thr'):
        MasknessFCNMaskHead(maskness_thr=1.0, num_classes=2)


def _tiny_cascade(rescore: bool) -> CascadeRoIHead:
    cfg = Config.fromfile(BASE_CONFIG)
    roi_head = cfg.model.roi_head
    roi_head.bbox_roi_extractor.update(out_channels=8, featmap_strides=[8])
    for stage in roi_head.bbox_head:
        stage.update(in_channels=8, conv_out_channels=8, fc_out_channels=16,
                     num_classes=3)
    roi_head.mask_roi_extractor.update(out_channels=8, featmap_strides=[8])
    roi_head.mask_head.update(
        type='eva_mm.MasknessFCNMaskHead', maskness_thr=0.5,
        rescore_by_maskness=rescore, num_convs=1, in_channels=8,
        conv_out_channels=8, num_classes=3)
    roi_head.test_cfg = cfg.model.test_cfg.rcnn
    # mmdet's cascade, one mask head per stage (the base config's
    # Detectron2CascadeRoIHead has one, run on logits as Mask R-CNN's).
    roi_head.type = 'CascadeRoIHead'
    torch.manual_seed(0)
    head = MMDET_MODELS.build(roi_head)
    head.init_weights()
    return head.eval()


def test_cascade_rescores_with_averaged_stage_masks() -> None:
    head, off = _tiny_cascade(True), _tiny_cascade(False)
    feats = (torch.randn(1, 8, 8, 8), )
    dets = InstanceData(
        bboxes=torch.tensor([[2., 2., 30., 30.], [20., 8., 60., 50.],
                             [0., 30., 40., 62.], [8., 8., 28., 34.]]),
        labels=torch.tensor([2, 0, 1, 2]),
        scores=torch.tensor([0.9, 0.7, 0.5, 0.3]))
    meta = dict(img_shape=(64, 64), ori_shape=(64, 64),
                scale_factor=(1.0, 1.0))
    with torch.no_grad():
        out = head.predict_mask(feats, [meta], [dets.clone()])[0]
        ref = off.predict_mask(feats, [meta], [dets.clone()])[0]
        # The reference maskness from the stages' masks, one RoI at a time.
        rois = bbox2roi([dets.bboxes])
        mean_prob = sum(
            head._mask_forward(stage, feats, rois)['mask_preds'].sigmoid()
            for stage in range(head.num_stages)) / head.num_stages
    expected = []
    for i, label in enumerate(dets.labels.tolist()):
        fg = mean_prob[i, label][mean_prob[i, label] > 0.5]
        maskness = fg.mean().item() if fg.numel() else 0.0
        expected.append(dets.scores[i].item() * maskness)
    assert 0 < max(expected) < 0.9
    order = sorted(range(4), key=lambda i: -expected[i])
    torch.testing.assert_close(out.scores,
                               torch.tensor([expected[i] for i in order]))
    assert torch.equal(ref.scores, dets.scores)
    assert torch.equal(out.masks, ref.masks[order])


# Soft-NMS, crafted: boxes of class 0 against A = [0, 0, 10, 10] with IoUs
# B 0.8, D 0.7, E 0.55; C far away; F repeats A's box for class 1.
BOXES = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 8.],
                      [20., 20., 30., 30.], [0., 0., 10., 7.],
                      [0., 0., 10., 5.5], [0., 0., 10., 10.]])
CLASS_SCORES = torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.7, 0.0], [0.5, 0.0],
                             [0.6, 0.0], [0.0, 0.5]])


def _predict(nms: dict) -> InstanceData:
    """The R-CNN test path: a bbox head with sigmoid scores, then NMS."""
    head = MMDET_MODELS.build(
        dict(type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=8,
             roi_feat_size=1, num_classes=2, reg_class_agnostic=True,
             loss_cls=dict(type='eva_mm.FederatedLoss', num_classes=2,
                           class_freq=[1, 1])))
    # Zero deltas keep the boxes; logits give the crafted probabilities.
    logits = torch.cat([_logit(CLASS_SCORES.clamp(1e-6, 1 - 1e-6)),
                        torch.zeros(6, 1)], dim=1)
    rcnn_test_cfg = ConfigDict(score_thr=0.02, nms=nms, max_per_img=300)
    return head.predict_by_feat(
        rois=(bbox2roi([BOXES]), ), cls_scores=(logits, ),
        bbox_preds=(torch.zeros(6, 4), ), batch_img_metas=[META],
        rcnn_test_cfg=rcnn_test_cfg)[0]


def test_linear_soft_nms_by_hand() -> None:
    out = _predict(dict(type='soft_nms', iou_threshold=0.6, method='linear',
                        min_score=1e-3))
    # Picked in order of current score, each decaying the others by
    # (1 - IoU) where IoU > 0.6: A decays B (0.8) and D (0.7), not E (0.55);
    # C overlaps nothing; E decays B (55/80) and D (55/70); B decays D
    # (70/80). F is class 1 and untouched.
    b = 0.8 * (1 - 0.8) * (1 - 55 / 80)
    d = 0.5 * (1 - 0.7) * (1 - 55 / 70) * (1 - 70 / 80)
    expected = [(0, 0.9, 0), (2, 0.7, 0), (4, 0.6, 0), (5, 0.5, 1),
                (1, b, 0), (3, d, 0)]
    torch.testing.assert_close(out.scores,
                               torch.tensor([s for _, s, _ in expected]))
    assert out.labels.tolist() == [c for _, _, c in expected]
    torch.testing.assert_close(out.bboxes, BOXES[[i for i, _, _ in expected]])
    assert math.isclose(d, 0.5 * 0.3 * (15 / 70) * 0.125)


def test_class_agnostic_soft_nms_and_switch_back_to_nms() -> None:
    # EVA's detectron2 soft-NMS runs across classes: F (A's box, IoU 1)
    # drops to 0, below min_score.
    agnostic = _predict(dict(type='soft_nms', iou_threshold=0.6,
                             method='linear', min_score=1e-3,
                             class_agnostic=True))
    assert agnostic.labels.tolist() == [0, 0, 0, 0, 0]
    # Plain NMS removes B and D instead of decaying them.
    hard = _predict(dict(type='nms', iou_threshold=0.6))
    torch.testing.assert_close(hard.scores,
                               torch.tensor([0.9, 0.7, 0.6, 0.5]))
    assert hard.labels.tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(hard.bboxes, BOXES[[0, 2, 4, 5]])
