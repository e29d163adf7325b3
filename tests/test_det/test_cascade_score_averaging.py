"""Cascade R-CNN test scores as detectron2/EVA: the mean stage probability."""
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi
from mmdet.structures.mask import BitmapMasks
from mmengine.config import Config
from mmengine.structures import InstanceData
from torch import Tensor

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.models.roi_heads import ProbabilityAveragingCascadeRoIHead

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE_CONFIG = osp.join(ROOT, 'configs', '_base_', 'models',
                       'cascade-mask-rcnn_eva-vit_simple-fpn.py')
NUM_CLASSES = 4
META = dict(img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1.0, 1.0))
FEDERATED = dict(type='eva_mm.FederatedLoss', num_classes=NUM_CLASSES,
                 class_freq=[4, 3, 2, 1], num_sampled_classes=3)

# The heads' unscoped type names are mmdet's, whatever scope an earlier test
# left behind.
pytestmark = pytest.mark.registry_scope('mmdet')


def _tiny_heads(loss_cls: Optional[dict]
                ) -> Tuple[ProbabilityAveragingCascadeRoIHead, CascadeRoIHead]:
    """The new head and mmdet's, tiny (8-channel features), same weights.

    Args:
        loss_cls: Classification loss of every stage; None keeps the base
            config's softmax cross-entropy.

    Returns:
        The probability-averaging head and the stock one, in eval mode.
    """
    cfg = Config.fromfile(BASE_CONFIG).model
    roi_head = cfg.roi_head
    roi_head.bbox_roi_extractor.update(out_channels=8, featmap_strides=[8])
    for stage in roi_head.bbox_head:
        stage.update(in_channels=8, conv_out_channels=8, fc_out_channels=16,
                     num_classes=NUM_CLASSES)
        if loss_cls is not None:
            # Replaced, not merged: CrossEntropyLoss's use_sigmoid must go.
            stage['loss_cls'] = dict(loss_cls)
    roi_head.mask_roi_extractor.update(out_channels=8, featmap_strides=[8])
    roi_head.mask_head.update(num_convs=1, in_channels=8,
                              conv_out_channels=8, num_classes=NUM_CLASSES)
    roi_head.update(train_cfg=cfg.train_cfg.rcnn, test_cfg=cfg.test_cfg.rcnn)
    roi_head.type = 'CascadeRoIHead'
    stock = MMDET_MODELS.build(roi_head)
    roi_head.type = 'eva_mm.ProbabilityAveragingCascadeRoIHead'
    averaging = MMDET_MODELS.build(roi_head)
    torch.manual_seed(0)
    stock.init_weights()
    # Random init gives near-uniform scores; larger classifier weights
    # make the stages disagree, so the two averages differ clearly.
    for bbox_head in stock.bbox_head:
        bbox_head.fc_cls.weight.data.normal_(0, 1.0)
        bbox_head.fc_cls.bias.data.normal_(0, 1.0)
    averaging.load_state_dict(stock.state_dict())
    return averaging.eval(), stock.eval()


def _proposals() -> InstanceData:
    # Fresh each time: the loss renames the proposals' fields in place.
    return InstanceData(
        bboxes=torch.tensor([[4., 4., 30., 30.], [20., 10., 60., 40.],
                             [0., 30., 25., 62.], [8., 8., 28., 34.],
                             [30., 30., 60., 60.]]),
        scores=torch.ones(5))


def _feats() -> Tuple[Tensor]:
    torch.manual_seed(1)
    return (torch.randn(1, 8, 8, 8), )


def _hand_mean_probs(head: CascadeRoIHead, feats: Tuple[Tensor],
                     sigmoid: bool) -> Tuple[Tensor, Tensor]:
    """Mean stage probabilities and final boxes, one stage at a time.

    Args:
        head: A cascade head (its stages' forward outputs are used).
        feats: Image features.
        sigmoid: Per-class sigmoid probabilities instead of the softmax.

    Returns:
        The mean over stages of the probabilities, (n, NUM_CLASSES + 1),
        and the final RoIs' boxes decoded by the last stage, (n, 4).
    """
    rois = bbox2roi([_proposals().bboxes])
    probs = []
    for stage, bbox_head in enumerate(head.bbox_head):
        out = head._bbox_forward(stage, feats, rois)
        logits = out['cls_score']
        probs.append(logits.sigmoid() if sigmoid else
                     F.softmax(logits, dim=1))
        # The regression is class-agnostic in the config: the label is moot.
        boxes = bbox_head.bbox_coder.decode(
            rois[:, 1:], out['bbox_pred'], max_shape=META['img_shape'])
        rois = torch.cat([rois[:, :1], boxes], dim=1)
    return torch.stack(probs).mean(dim=0), rois[:, 1:]


@pytest.mark.parametrize('loss_cls', [None, FEDERATED],
                         ids=['softmax', 'federated-sigmoid'])
def test_scores_are_mean_stage_probabilities(loss_cls: Optional[dict]
                                             ) -> None:
    sigmoid = loss_cls is not None
    averaging, stock = _tiny_heads(loss_cls)
    feats = _feats()
    with torch.no_grad():
        expected, boxes = _hand_mean_probs(averaging, feats, sigmoid)
        raw = averaging.predict_bbox(feats, [META], [_proposals()],
                                     rcnn_test_cfg=None)[0]
        raw_stock = stock.predict_bbox(feats, [META], [_proposals()],
                                       rcnn_test_cfg=None)[0]
        forward_scores = averaging.forward(
            feats, [_proposals()], [DetDataSample(metainfo=META)])[0][0]
    torch.testing.assert_close(raw.scores, expected)
    if not sigmoid:
        torch.testing.assert_close(expected.sum(dim=1), torch.ones(5))
    # forward() hands out what the final head's activation turns into them.
    activated = forward_scores.sigmoid() if sigmoid else \
        F.softmax(forward_scores, dim=1)
    torch.testing.assert_close(activated, expected)
    # Same boxes as mmdet (the refinement is unchanged), other scores.
    torch.testing.assert_close(raw.bboxes, boxes)
    assert torch.equal(raw.bboxes, raw_stock.bboxes)
    assert (raw.scores - raw_stock.scores).abs().max() > 0.01

    with torch.no_grad():
        dets = averaging.predict_bbox(feats, [META], [_proposals()],
                                      rcnn_test_cfg=averaging.test_cfg)[0]
    assert len(dets) > 0
    # Every detection carries the mean probability of its box and class.
    for box, label, score in zip(dets.bboxes, dets.labels, dets.scores):
        roi = (boxes - box).abs().sum(dim=1).argmin()
        torch.testing.assert_close(score, expected[roi, label])


def _losses(head: CascadeRoIHead, feats: Tuple[Tensor]) -> Dict[str, Tensor]:
    masks = np.zeros((2, 64, 64), dtype=np.uint8)
    masks[0, 5:31, 5:30] = 1
    masks[1, 10:40, 22:58] = 1
    sample = DetDataSample(metainfo=META)
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[5., 5., 30., 31.], [22., 10., 58., 40.]]),
        labels=torch.tensor([1, 3]),
        masks=BitmapMasks(masks, 64, 64))
    # The RoI sampler and the federated classes are random: same draws.
    torch.manual_seed(2)
    return head.loss(feats, [_proposals()], [sample])


@pytest.mark.parametrize('loss_cls', [None, FEDERATED],
                         ids=['softmax', 'federated-sigmoid'])
def test_training_loss_is_mmdets(loss_cls: Optional[dict]) -> None:
    averaging, stock = _tiny_heads(loss_cls)
    averaging.train()
    stock.train()
    feats = _feats()
    losses = _losses(averaging, feats)
    reference = _losses(stock, feats)
    assert losses.keys() == reference.keys()
    assert {'s2.loss_cls', 's2.loss_bbox', 's2.loss_mask'} <= losses.keys()
    for name, value in reference.items():
        assert torch.equal(losses[name], value), name
    assert averaging._stage_probs is None


def test_activation_without_inverse_is_refused() -> None:
    seesaw = dict(type='SeesawLoss', num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match='SeesawLoss.*FederatedLoss'):
        _tiny_heads(seesaw)


def test_extreme_probabilities_round_trip() -> None:
    """Extreme probabilities (0 and 1) come back finite and unchanged."""
    averaging, _ = _tiny_heads(None)
    probs: List[List[float]] = [[1., 0.], [0.25, 0.75]]
    logits = averaging._deactivate(averaging.bbox_head[-1],
                                   torch.tensor(probs))
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(F.softmax(logits, dim=1), torch.tensor(probs))
    federated, _ = _tiny_heads(FEDERATED)
    logits = federated._deactivate(federated.bbox_head[-1],
                                   torch.tensor(probs))
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits.sigmoid(), torch.tensor(probs))
