"""eva_mm.Detectron2CascadeRoIHead against hand computations.

Crafted proposals and ground truth on a 128 px image, box heads whose
classifier and regressor are constants (zero weights, chosen biases): the
RoIs each stage trains on, their labels and regression targets, and hence
every stage loss, follow from box arithmetic done here in NumPy with
detectron2's formulas (Box2BoxTransform, pairwise IoU, Matcher), not from
the head's code.
"""
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

import eva_mm  # noqa: F401  (registers eva_mm.*)

NUM_CLASSES = 3
IMG = 128
STDS = ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
        [1 / 30, 1 / 30, 1 / 15, 1 / 15])
IOUS = (0.5, 0.6, 0.7)
GT = np.array([[10., 10., 50., 50.], [60., 60., 120., 100.]])
GT_LABELS = np.array([0, 2])
PROPOSALS = np.array([
    [12., 12., 52., 52.],  # g1, IoU 0.82
    [10., 10., 40., 40.],  # g1, IoU 0.5625
    [0., 0., 30., 30.],  # g1, IoU 0.19: background
    [65., 60., 120., 100.],  # g2, IoU 0.92
    [100., 0., 127., 20.],  # background
    [110., 100., 140., 130.],  # background, crosses the border
])
# Constant outputs of each stage (normalised deltas; logits incl. bg).
DELTAS = np.array([[1.0, -0.5, 0.3, 0.2], [0.4, 0.4, -0.6, 0.5],
                   [-0.3, 0.2, 0.1, -0.4]])
LOGITS = np.array([[0.5, -0.2, 1.0, 0.3], [-1.0, 0.4, 0.2, 0.9],
                   [0.1, 0.7, -0.5, 0.0]])


pytestmark = pytest.mark.registry_scope('mmdet')


def head_cfg(**overrides) -> ConfigDict:
    """A small cascade head: one 4-stride level, 2-fc box heads."""
    cfg = dict(
        type='eva_mm.Detectron2CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1.0, 1.0, 1.0],
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=8,
            featmap_strides=[4]),
        bbox_head=[
            dict(
                type='Shared2FCBBoxHead',
                in_channels=8,
                fc_out_channels=16,
                roi_feat_size=7,
                num_classes=NUM_CLASSES,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0.] * 4,
                    target_stds=stds),
                reg_class_agnostic=True,
                loss_cls=dict(type='CrossEntropyLoss', loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0))
            for stds in STDS
        ],
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14,
                           sampling_ratio=0),
            out_channels=8,
            featmap_strides=[4]),
        mask_head=dict(
            type='FCNMaskHead', num_convs=1, in_channels=8,
            conv_out_channels=8, num_classes=NUM_CLASSES),
        train_cfg=[
            dict(
                assigner=dict(
                    type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou,
                    min_pos_iou=iou, match_low_quality=False,
                    ignore_iof_thr=-1),
                # Stage 1: 64 RoIs at 25% positives hold all 8 candidates.
                sampler=dict(
                    type='RandomSampler', num=64, pos_fraction=0.25,
                    neg_pos_ub=-1, add_gt_as_proposals=True)
                if stage == 0 else dict(type='PseudoSampler'),
                mask_size=28,
                pos_weight=-1,
                debug=False) for stage, iou in enumerate(IOUS)
        ],
        test_cfg=dict(
            score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=100, mask_thr_binary=0.5))
    cfg.update(overrides)
    return ConfigDict(cfg)


def constant_head():
    head = MODELS.build(head_cfg())
    head.init_weights()
    with torch.no_grad():
        for stage, bbox_head in enumerate(head.bbox_head):
            bbox_head.fc_cls.weight.zero_()
            bbox_head.fc_cls.bias.copy_(torch.tensor(LOGITS[stage]))
            bbox_head.fc_reg.weight.zero_()
            bbox_head.fc_reg.bias.copy_(torch.tensor(DELTAS[stage]))
    return head


def sample() -> DetDataSample:
    masks = np.zeros((2, IMG, IMG), dtype=np.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, GT.astype(int)):
        mask[y1:y2, x1:x2] = 1
    data = DetDataSample(metainfo=dict(
        img_shape=(IMG, IMG), ori_shape=(IMG, IMG), scale_factor=(1., 1.),
        pad_shape=(IMG, IMG), batch_input_shape=(IMG, IMG)))
    data.gt_instances = InstanceData(
        bboxes=torch.tensor(GT, dtype=torch.float32),
        labels=torch.tensor(GT_LABELS),
        masks=BitmapMasks(masks, IMG, IMG))
    data.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4))
    return data


def proposals() -> InstanceData:
    return InstanceData(
        bboxes=torch.tensor(PROPOSALS, dtype=torch.float32),
        scores=torch.ones(len(PROPOSALS)))


def feats() -> Tuple[Tensor]:
    torch.manual_seed(0)
    return (torch.randn(1, 8, IMG // 4, IMG // 4), )


# -- detectron2's formulas, in NumPy ---------------------------------------


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """pairwise_iou (structures/boxes.py): (len(a), len(b))."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def apply_deltas(boxes: np.ndarray, deltas: np.ndarray,
                 stds: List[float]) -> np.ndarray:
    """Box2BoxTransform(weights=1 / stds).apply_deltas, then clip."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    d = deltas * np.array(stds)
    ncx, ncy = cx + d[0] * w, cy + d[1] * h
    nw, nh = w * np.exp(d[2]), h * np.exp(d[3])
    out = np.stack([ncx - nw / 2, ncy - nh / 2, ncx + nw / 2, ncy + nh / 2],
                   axis=1)
    return np.clip(out, 0, IMG)


def get_deltas(src: np.ndarray, dst: np.ndarray,
               stds: List[float]) -> np.ndarray:
    """Box2BoxTransform.get_deltas: the normalised regression targets."""
    sw, sh = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
    dw, dh = dst[:, 2] - dst[:, 0], dst[:, 3] - dst[:, 1]
    scx, scy = src[:, 0] + sw / 2, src[:, 1] + sh / 2
    dcx, dcy = dst[:, 0] + dw / 2, dst[:, 1] + dh / 2
    d = np.stack([(dcx - scx) / sw, (dcy - scy) / sh, np.log(dw / sw),
                  np.log(dh / sh)], axis=1)
    return d / np.array(stds)


def hand_cascade() -> List[Dict[str, np.ndarray]]:
    """Per stage: its RoIs, their labels and matched boxes, by hand."""
    # Stage 1: the proposals plus the ground truth (proposal_append_gt),
    # all sampled; matched at 0.5.
    rois = np.concatenate([PROPOSALS, GT])
    stages = []
    for stage, thr in enumerate(IOUS):
        overlaps = iou(rois, GT)
        best = overlaps.argmax(1)
        fg = overlaps.max(1) >= thr
        labels = np.where(fg, GT_LABELS[best], NUM_CLASSES)
        stages.append(dict(rois=rois, labels=labels, matched=GT[best]))
        # Every RoI's predicted box, clipped; empty ones dropped; no ground
        # truth added for the next stage.
        refined = apply_deltas(rois, DELTAS[stage], STDS[stage])
        keep = (refined[:, 2] > refined[:, 0]) & (refined[:, 3] >
                                                  refined[:, 1])
        rois = refined[keep]
    return stages


def hand_losses() -> Dict[str, float]:
    losses = {}
    for stage, want in enumerate(hand_cascade()):
        logits = LOGITS[stage]
        log_probs = logits - np.log(np.exp(logits).sum())
        fg = want['labels'] < NUM_CLASSES
        losses[f's{stage}.loss_cls'] = float(-log_probs[want['labels']].mean())
        targets = get_deltas(want['rois'][fg], want['matched'][fg],
                             STDS[stage])
        # L1 summed over the foreground, divided by all RoIs (detectron2's
        # box_reg_loss / max(gt_classes.numel(), 1)).
        losses[f's{stage}.loss_bbox'] = float(
            np.abs(DELTAS[stage] - targets).sum() / len(want['labels']))
    return losses


def sort_rows(boxes: np.ndarray) -> np.ndarray:
    """Boxes in a fixed order (by their coordinates to 0.1 px)."""
    return boxes[np.lexsort(boxes.round(1).T[::-1])]


def test_crafted_case_is_not_degenerate() -> None:
    stages = hand_cascade()
    counts = [(len(s['rois']), int((s['labels'] < NUM_CLASSES).sum()))
              for s in stages]
    # 8 RoIs at stage 1 (5 positive); the border box's refinement stays
    # inside after clipping, so no RoI is lost; the later stages keep more
    # positives than mmdet's 25% cap would, and their counts differ from
    # re-matching the stage-1 RoIs.
    assert counts[0] == (8, 5)
    assert all(n == 8 for n, _ in counts)
    assert counts[1][1] > 0.25 * 8 and counts[1][1] != counts[2][1]


def test_stages_train_on_the_refined_rois() -> None:
    head = constant_head().train()
    seen = []

    def record(module, args, output):
        seen.append(args[1].detach().clone())

    handles = [
        extractor.register_forward_hook(record)
        for extractor in head.bbox_roi_extractor
    ]
    head.loss(feats(), [proposals()], [sample()])
    for handle in handles:
        handle.remove()
    assert len(seen) == 3
    for stage, (rois, want) in enumerate(zip(seen, hand_cascade())):
        np.testing.assert_allclose(sort_rows(rois[:, 1:].numpy()),
                                   sort_rows(want['rois']), atol=2e-3,
                                   err_msg=f'stage {stage}')


def test_losses_equal_hand_computation() -> None:
    head = constant_head().train()
    losses = head.loss(feats(), [proposals()], [sample()])
    expected = hand_losses()
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-4,
                                                    abs=1e-6), name
    # One mask loss, no per-stage mask losses.
    assert 'loss_mask' in losses
    assert not any(k.startswith('s') and 'mask' in k for k in losses)
    # Stage weights apply as given: halve stage 2.
    halved = MODELS.build(head_cfg(stage_loss_weights=[1.0, 0.5, 1.0]))
    halved.load_state_dict(head.state_dict())
    losses = halved.train().loss(feats(), [proposals()], [sample()])
    assert losses['s1.loss_cls'].item() == pytest.approx(
        expected['s1.loss_cls'] / 2, rel=1e-4)


def test_mask_head_trains_on_stage1_foreground_and_runs_once() -> None:
    head = constant_head()
    rois_seen = []
    handle = head.mask_roi_extractor.register_forward_hook(
        lambda module, args, output: rois_seen.append(args[1].clone()))
    head.train().loss(feats(), [proposals()], [sample()])
    assert len(rois_seen) == 1
    first = hand_cascade()[0]
    fg = first['rois'][first['labels'] < NUM_CLASSES]
    np.testing.assert_array_equal(sort_rows(rois_seen[0][:, 1:].numpy()),
                                  sort_rows(fg.astype(np.float32)))
    # At test: once, on the final detections.
    rois_seen.clear()
    head.eval()
    with torch.no_grad():
        results = head.predict(feats(), [proposals()], [sample()],
                               rescale=False)[0]
    handle.remove()
    assert len(rois_seen) == 1
    assert torch.equal(rois_seen[0][:, 1:], results.bboxes)
    assert results.masks.shape == (len(results), IMG, IMG)
    assert isinstance(head.mask_head, torch.nn.Module) and not isinstance(
        head.mask_head, torch.nn.ModuleList)


def test_box_feature_gradient_is_divided_by_the_stages() -> None:
    """The features get 1/3 of each stage loss's gradient; the head's own
    parameters get all of it (the original averaged losses with scaled-up
    head gradients, cascade_rcnn.py:301-305)."""
    head = MODELS.build(head_cfg())
    head.init_weights()
    x = feats()[0].requires_grad_()
    head.train()
    losses = head.loss((x, ), [proposals()], [sample()])
    # One stage's loss on given RoIs, with and without the scaling.
    rois = InstanceData(priors=torch.tensor(PROPOSALS[:4],
                                            dtype=torch.float32))
    assign = head.bbox_assigner[2].assign(rois, sample().gt_instances)
    sampled = head.bbox_sampler[2].sample(assign, rois, sample().gt_instances)
    grads = {}
    for mode in ('train', 'eval'):
        getattr(head, mode)()
        head.zero_grad()
        x.grad = None
        out = head.bbox_loss(2, (x, ), [sampled])['loss_bbox']
        (out['loss_cls'] + out['loss_bbox']).backward()
        grads[mode] = (x.grad.clone(),
                       head.bbox_head[2].fc_cls.weight.grad.clone())
    assert grads['eval'][0].abs().sum() > 0
    torch.testing.assert_close(grads['train'][0], grads['eval'][0] / 3)
    torch.testing.assert_close(grads['train'][1], grads['eval'][1])
    assert set(losses) >= {'s0.loss_cls', 's2.loss_bbox', 'loss_mask'}


def test_test_scores_are_probability_averaged() -> None:
    """Prediction equals ProbabilityAveragingCascadeRoIHead's (tested
    against a hand computation in test_cascade_score_averaging.py)."""
    head = MODELS.build(head_cfg()).eval()
    torch.manual_seed(4)
    head.init_weights()
    for bbox_head in head.bbox_head:
        bbox_head.fc_cls.weight.data.normal_(0, 1.0)
    cfg = head_cfg(type='eva_mm.ProbabilityAveragingCascadeRoIHead')
    cfg['train_cfg'] = None
    averaging = MODELS.build(cfg).eval()
    averaging.bbox_head.load_state_dict(head.bbox_head.state_dict())
    with torch.no_grad():
        ours = head.predict_bbox(feats(), [sample().metainfo], [proposals()],
                                 rcnn_test_cfg=head.test_cfg)[0]
        ref = averaging.predict_bbox(feats(), [sample().metainfo],
                                     [proposals()],
                                     rcnn_test_cfg=averaging.test_cfg)[0]
    assert len(ours) > 0
    torch.testing.assert_close(ours.scores, ref.scores)
    torch.testing.assert_close(ours.bboxes, ref.bboxes)


def test_sampling_stages_are_refused() -> None:
    cfg = head_cfg()
    cfg['train_cfg'][1]['sampler'] = dict(
        type='RandomSampler', num=64, pos_fraction=0.25)
    with pytest.raises(ValueError, match=r'rcnn\[1\].*PseudoSampler'):
        MODELS.build(cfg)
    with pytest.raises(TypeError, match='one mask head'):
        MODELS.build(head_cfg(mask_head=[head_cfg()['mask_head']] * 3))
