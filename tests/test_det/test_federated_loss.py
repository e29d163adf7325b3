"""eva_mm.FederatedLoss: hand-computed values, class sampling, mmdet heads."""
import json
import math
import os.path as osp
from typing import List, Sequence

import pytest
import torch
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.models.losses import FederatedLoss

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE_CONFIG = osp.join(ROOT, 'configs', '_base_', 'models',
                       'cascade-mask-rcnn_eva-vit_simple-fpn.py')
# Unscoped type names are mmdet's, whatever scope an earlier test left.
pytestmark = pytest.mark.registry_scope('mmdet')


def _hand_loss(logits: Sequence[Sequence[float]], labels: Sequence[int],
               classes: Sequence[int], roi_weights: Sequence[float],
               divisor: float) -> float:
    """Federated BCE written out element by element in plain floats."""
    total = 0.0
    for row, label, roi_weight in zip(logits, labels, roi_weights):
        for cls in classes:
            prob = 1 / (1 + math.exp(-row[cls]))
            target = 1.0 if cls == label else 0.0
            total -= roi_weight * (target * math.log(prob) +
                                   (1 - target) * math.log(1 - prob))
    return total / divisor


LOGITS = [[0.3, -1.2, 2.0, 0.1, -0.4, 5.0, 0.0],
          [-2.0, 1.5, 0.2, -0.3, 0.8, -5.0, 0.0],
          [1.0, 0.0, -0.5, 2.2, -1.1, 0.6, 0.0],
          [0.4, 0.9, -1.3, -0.2, 0.5, -0.7, 0.0]]


def test_all_classes_matches_hand_reference() -> None:
    # Sampling 6 of 6 classes keeps every class: the plain sigmoid BCE.
    loss = FederatedLoss(num_classes=6, class_freq=[1] * 6,
                         num_sampled_classes=6, loss_weight=2.0)
    labels = [2, 6, 0, 6]  # 6 is background: all-zero targets
    value = loss(torch.tensor(LOGITS), torch.tensor(labels))
    expected = 2.0 * _hand_loss(LOGITS, labels, range(6), [1] * 4, 4)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_classes_match_hand_reference() -> None:
    # Only classes 1, 3 and 4 can be drawn; present class 3 plus two draws
    # therefore always gives {1, 3, 4}, whatever the random state.
    loss = FederatedLoss(num_classes=6, class_freq=[0, 9, 0, 4, 1, 0],
                         num_sampled_classes=3)
    labels = [3, 6, 3, 6]
    weights = [1.0, 1.0, 0.0, 1.0]
    value = loss(torch.tensor(LOGITS), torch.tensor(labels),
                 torch.tensor(weights), avg_factor=3)
    expected = _hand_loss(LOGITS, labels, [1, 3, 4], weights, 3)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # Without avg_factor the sum is divided by the number of RoIs.
    plain = loss(torch.tensor(LOGITS), torch.tensor(labels))
    assert plain.item() == pytest.approx(
        _hand_loss(LOGITS, labels, [1, 3, 4], [1] * 4, 4), rel=1e-6)
    per_element = loss(torch.tensor(LOGITS), torch.tensor(labels),
                       reduction_override='none')
    assert per_element.shape == (4, 6)
    assert per_element[:, [0, 2, 5]].abs().sum() == 0


def test_sampling_keeps_present_classes_and_count() -> None:
    freq = [float(i % 7 + 1) for i in range(30)]
    loss = FederatedLoss(num_classes=30, class_freq=freq,
                         num_sampled_classes=8)
    torch.manual_seed(0)
    for _ in range(200):
        labels = torch.randint(0, 31, (12, ))
        classes = loss.sample_classes(labels)
        present = set(labels[labels < 30].tolist())
        assert present <= set(classes.tolist())
        assert len(classes) == max(8, len(present))
        assert len(set(classes.tolist())) == len(classes)
        assert classes.max() < 30
    # Asking for more classes than exist covers all of them.
    every = FederatedLoss(num_classes=5, class_freq=[3, 1, 4, 1, 5],
                          num_sampled_classes=50)
    assert sorted(every.sample_classes(torch.tensor([5, 2])).tolist()) == [
        0, 1, 2, 3, 4
    ]


def test_single_draw_follows_sqrt_frequency() -> None:
    # One draw beyond the present class: P(c) = freq_c^0.5 / sum over the
    # other classes. 0 is present; weights of 1..3 are 1, 2, 3.
    loss = FederatedLoss(num_classes=4, class_freq=[100, 1, 4, 9],
                         num_sampled_classes=2)
    torch.manual_seed(1)
    draws = 6000
    counts = torch.zeros(4)
    for _ in range(draws):
        counts[loss.sample_classes(torch.tensor([0, 4]))[1]] += 1
    assert counts[0] == 0
    for cls, prob in ((1, 1 / 6), (2, 2 / 6), (3, 3 / 6)):
        sigma = math.sqrt(prob * (1 - prob) / draws)
        assert abs(counts[cls] / draws - prob) < 5 * sigma


def _write_lvis_categories(path: str, counts_by_id: dict) -> str:
    cats = [dict(id=i, name=f'c{i}', image_count=n)
            for i, n in counts_by_id.items()]
    with open(path, 'w') as f:
        json.dump(dict(images=[], annotations=[], categories=cats), f)
    return path


def test_ann_file_is_read_lazily_in_id_order(tmp_path) -> None:
    missing = str(tmp_path / 'not_there.json')
    lazy = FederatedLoss(num_classes=3, ann_file=missing)  # builds
    with pytest.raises(FileNotFoundError):
        lazy.sample_weights
    ann = _write_lvis_categories(
        str(tmp_path / 'lvis.json'), {3: 16, 1: 4, 2: 9})
    loss = FederatedLoss(num_classes=3, ann_file=ann, freq_weight_power=0.5)
    torch.testing.assert_close(loss.sample_weights,
                               torch.tensor([2.0, 3.0, 4.0]))


def test_bad_settings_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match='exactly one'):
        FederatedLoss(num_classes=3)
    with pytest.raises(ValueError, match='exactly one'):
        FederatedLoss(num_classes=3, ann_file='a.json', class_freq=[1, 1, 1])
    with pytest.raises(ValueError, match='one frequency per class'):
        FederatedLoss(num_classes=3, class_freq=[1, 1])
    coco = str(tmp_path / 'coco.json')
    with open(coco, 'w') as f:
        json.dump(dict(categories=[dict(id=1, name='a')]), f)
    with pytest.raises(ValueError, match='image_count'):
        FederatedLoss(num_classes=1, ann_file=coco).sample_weights
    ann = _write_lvis_categories(str(tmp_path / 'lvis.json'), {1: 2, 2: 3})
    with pytest.raises(ValueError, match='num_classes'):
        FederatedLoss(num_classes=5, ann_file=ann).sample_weights
    loss = FederatedLoss(num_classes=3, class_freq=[1, 1, 1])
    with pytest.raises(ValueError, match=r'\(N, 4\)'):
        loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='num_classes=3'):
        loss.get_cls_channels(80)


def test_accuracy_of_crafted_scores() -> None:
    loss = FederatedLoss(num_classes=3, class_freq=[1, 1, 1])
    logits = torch.tensor([[4.0, -4.0, -4.0, 9.0],   # class 0, right
                           [-4.0, -4.0, -4.0, 9.0],  # background, right
                           [-4.0, 1.0, 3.0, 9.0],    # class 2, label 1
                           [-1.0, -0.5, -4.0, 9.0]])  # background, label 1
    acc = loss.get_accuracy(logits, torch.tensor([0, 3, 1, 1]))
    assert acc['acc'].item() == pytest.approx(50.0)
    # Foreground arg-max: right on RoI 0 and 3, wrong on RoI 2.
    assert acc['acc_fg'].item() == pytest.approx(200 / 3)


def test_training_lowers_the_loss_and_leaves_background_alone() -> None:
    torch.manual_seed(0)
    features = torch.randn(64, 8)
    # A linearly separable task: the label is the largest of 5 features,
    # 4 meaning background.
    labels = features[:, :5].argmax(dim=1)
    classifier = torch.nn.Linear(8, 5)
    loss_fn = FederatedLoss(num_classes=4, class_freq=[5, 1, 2, 8],
                            num_sampled_classes=3)
    optim = torch.optim.SGD(classifier.parameters(), lr=0.5)
    losses: List[float] = []
    for _ in range(60):
        optim.zero_grad()
        loss = loss_fn(classifier(features), labels)
        loss.backward()
        assert classifier.weight.grad[4].abs().sum() == 0
        optim.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])


def _tiny_cascade_roi_head() -> CascadeRoIHead:
    cfg = Config.fromfile(BASE_CONFIG)
    roi_head = cfg.model.roi_head
    roi_head.pop('mask_roi_extractor')
    roi_head.pop('mask_head')
    roi_head.bbox_roi_extractor.out_channels = 16
    roi_head.bbox_roi_extractor.featmap_strides = [8]
    for stage in roi_head.bbox_head:
        stage.update(in_channels=16, conv_out_channels=16,
                     fc_out_channels=32, num_classes=5)
        # Replaced, not merged: CrossEntropyLoss's use_sigmoid must go.
        stage['loss_cls'] = dict(
            type='eva_mm.FederatedLoss', num_classes=5,
            class_freq=[4, 3, 2, 1, 9], num_sampled_classes=3)
    roi_head.update(train_cfg=cfg.model.train_cfg.rcnn,
                    test_cfg=cfg.model.test_cfg.rcnn)
    head = MMDET_MODELS.build(roi_head)
    head.init_weights()
    return head


def test_cascade_bbox_heads_train_and_predict_sigmoid_scores() -> None:
    torch.manual_seed(0)
    head = _tiny_cascade_roi_head()
    assert head.bbox_head[0].fc_cls.out_features == 6
    feats = (torch.randn(1, 16, 8, 8), )
    metas = [dict(img_shape=(64, 64), ori_shape=(64, 64),
                  scale_factor=(1.0, 1.0))]

    def proposals() -> InstanceData:
        # Fresh each time: the loss renames the proposals' fields in place.
        return InstanceData(
            bboxes=torch.tensor([[4., 4., 30., 30.], [20., 10., 60., 40.],
                                 [0., 30., 25., 62.], [8., 8., 28., 34.]]),
            scores=torch.ones(4))

    sample = DetDataSample(metainfo=metas[0])
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[5., 5., 30., 31.], [22., 10., 58., 40.]]),
        labels=torch.tensor([1, 3]))
    losses = head.loss(feats, [proposals()], [sample])
    for stage in range(3):
        assert torch.isfinite(losses[f's{stage}.loss_cls'])
        assert f's{stage}.acc_fg' in losses

    head.eval()
    with torch.no_grad():
        raw = head.predict_bbox(feats, metas, [proposals()],
                                rcnn_test_cfg=None)[0]
        # forward() returns the logits of the same RoIs' scores (the base
        # config's head averages the stages' sigmoids).
        mean_logits = head.forward(feats, [proposals()], [sample])[0][0]
    torch.testing.assert_close(raw.scores, mean_logits.sigmoid())
    assert not torch.allclose(raw.scores.sum(1), torch.ones(4))
    with torch.no_grad():
        final = head.predict_bbox(feats, metas, [proposals()],
                                  rcnn_test_cfg=head.test_cfg)[0]
    assert ((final.scores > 0) & (final.scores < 1)).all()
