"""The official EVA-01 detection details the EVA configs follow (issue #11).

Each setting is read from the paper configs and its effect computed a
second way: by hand, with detectron2's formulas, or with the reference
evaluator.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.models.layers import multiclass_nms
from mmdet.registry import METRICS, MODELS
from mmengine.config import Config
from mmengine.structures import InstanceData

import eva_mm  # noqa: F401  (registers eva_mm.*)
from eva_mm.models.backbones import EVAViT
from eva_mm.models.layers.pos_embed import resize_rel_pos
from eva_mm.models.losses import FederatedLoss

CONFIGS = Path(__file__).resolve().parents[2] / 'configs/detection'
COCO = CONFIGS / 'eva-g-p16_cascade-mask-rcnn_lsj-1024_coco.py'
LVIS = CONFIGS / 'eva-g-p16_cascade-mask-rcnn_lsj-1024_lvis-v1.py'
LVIS_1536 = (CONFIGS /
             'eva-g-p16_cascade-mask-rcnn_lsj-1280_lvis-v1_test-1536.py')
COCO_1536 = CONFIGS / 'eva-g-p16_cascade-mask-rcnn_lsj-1280_coco_test-1536.py'


pytestmark = pytest.mark.registry_scope('mmdet')


def load(path: Path) -> Config:
    return Config.fromfile(str(path))


def test_soft_nms_keeps_every_detection_above_min_score() -> None:
    """150 separate boxes of 3 classes: soft-NMS decays none of them, so
    all those scoring at least 1e-3 come back, with no per-image cap."""
    rcnn = load(COCO).model.test_cfg.rcnn
    assert rcnn.max_per_img == -1 and rcnn.score_thr == 0.0
    rng = np.random.default_rng(0)
    num = 150
    corners = np.stack([np.arange(num) * 20.0, np.zeros(num)], 1)
    boxes = torch.tensor(np.concatenate([corners, corners + 10], 1),
                         dtype=torch.float32)
    scores = torch.zeros(num, 4)
    labels = rng.integers(0, 3, num)
    # Scores away from the 1e-3 boundary; a quarter below it.
    values = np.where(rng.random(num) < 0.25, rng.uniform(1e-5, 5e-4, num),
                      rng.uniform(0.01, 0.9, num))
    scores[np.arange(num), labels] = torch.tensor(values,
                                                  dtype=torch.float32)
    dets, kept = multiclass_nms(boxes, scores, rcnn.score_thr, rcnn.nms,
                                rcnn.max_per_img)
    assert len(dets) == int((values >= 1e-3).sum()) > 100
    assert set(kept.tolist()) == set(labels[values >= 1e-3].tolist())
    # The LVIS configs keep their hard-NMS top-k (300; 1000 at 1536 px).
    assert load(LVIS).model.test_cfg.rcnn.max_per_img == 300
    assert load(LVIS_1536).model.test_cfg.rcnn.max_per_img == 1000


def _coco_file(path: Path) -> str:
    data = dict(
        images=[dict(id=1, width=3000, height=100, file_name='a.jpg')],
        categories=[dict(id=1, name='thing')],
        annotations=[dict(id=1, image_id=1, category_id=1, iscrowd=0,
                          bbox=[0, 0, 20, 20], area=400.0)])
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize('max_dets, ap50', [((1, 10, 100), 0.0),
                                            ((100, 300, 1000), 1 / 101)])
def test_coco_ap50_is_scored_at_100_detections(tmp_path: Path, max_dets,
                                               ap50: float) -> None:
    """One object, found only by the 101st detection. detectron2 scores
    AP50 within 100 detections, so it is 0; mmdet's default (100, 300, 1000)
    scores it within 1000: precision 1/101 at full recall, an AP50 of
    1/101. AP (0.5:0.95) is at 100 in both."""
    evaluator = dict(load(COCO).val_evaluator)
    assert tuple(evaluator['proposal_nums']) == (1, 10, 100)
    evaluator.update(ann_file=_coco_file(tmp_path / 'gt.json'),
                     proposal_nums=max_dets, outfile_prefix=None)
    metric = METRICS.build(dict(evaluator, metric='bbox'))
    metric.dataset_meta = dict(classes=('thing', ))
    misses = [[100.0 + 25 * i, 0.0, 120.0 + 25 * i, 20.0] for i in range(100)]
    boxes = torch.tensor(misses + [[0.0, 0.0, 20.0, 20.0]])
    scores = torch.linspace(0.9, 0.5, 101)
    metric.process({}, [dict(
        img_id=1, ori_shape=(100, 3000),
        pred_instances=dict(bboxes=boxes, scores=scores,
                            labels=torch.zeros(101, dtype=torch.long)))])
    results = metric.evaluate(1)
    assert results['coco/bbox_mAP_50'] == pytest.approx(ap50, abs=1e-3)
    assert results['coco/bbox_mAP'] == 0.0


def test_l1_box_losses() -> None:
    """smooth_l1_beta = 0: detectron2's smooth_l1_loss is then
    sum |pred - target|; mmdet's L1Loss with the same normaliser."""
    model = load(COCO).model
    assert model.rpn_head.loss_bbox == dict(type='L1Loss', loss_weight=1.0)
    for stage in model.roi_head.bbox_head:
        assert stage.loss_bbox == dict(type='L1Loss', loss_weight=1.0)
    loss = MODELS.build(model.roi_head.bbox_head[0].loss_bbox)
    pred = torch.tensor([[0.5, -1.0, 2.0, 0.0], [0.1, 0.2, -0.3, 0.4]])
    target = torch.tensor([[0.0, 0.0, 1.0, 0.5], [0.1, -0.2, 0.3, 0.4]])
    hand = (0.5 + 1.0 + 1.0 + 0.5 + 0.0 + 0.4 + 0.6 + 0.0) / 8
    assert float(loss(pred, target, avg_factor=8)) == pytest.approx(hand)


def _rpn_head(cfg: Config):
    head = dict(cfg.model.rpn_head, train_cfg=cfg.model.train_cfg.rpn,
                test_cfg=cfg.model.test_cfg.rpn, in_channels=8,
                feat_channels=8)
    return MODELS.build(head)


def test_rpn_trains_border_anchors_and_any_best_match() -> None:
    """A 40 x 4 px object on the image's top edge: its best anchors (the
    three 2:1 anchors of stride 4 centred at x = 20, y = 0, 4, 8, which
    contain it: IoU 160 / 1024) cross the border. detectron2
    (anchor_boundary_thresh=-1, low-quality matches at any IoU) labels every
    anchor of that best IoU positive (up to float ties); mmdet's defaults
    (allowed_border=0, min_pos_iou=0.3) label none."""
    cfg = load(COCO)
    assert cfg.model.train_cfg.rpn.allowed_border == -1
    assert cfg.model.train_cfg.rpn.assigner.min_pos_iou == 0.0
    assert 'min_size' not in cfg.train_dataloader.dataset.filter_cfg
    size = 64
    gt_box = np.array([0.0, 0.0, 40.0, 4.0])
    meta = dict(img_shape=(size, size), pad_shape=(size, size),
                batch_input_shape=(size, size))
    gt = InstanceData(bboxes=torch.tensor(gt_box[None], dtype=torch.float32),
                      labels=torch.tensor([0]))

    def positives(head) -> set:
        shapes = [(size // s, size // s) for s in (4, 8, 16, 32, 64)]
        anchors = torch.cat(
            head.prior_generator.grid_priors(shapes, device='cpu'))
        flags = torch.cat(
            head.prior_generator.valid_flags(shapes, (size, size), 'cpu'))
        out = head._get_targets_single(anchors, flags, gt, meta, None)
        return set(out[4].tolist()), anchors.numpy()

    ours, anchors = positives(_rpn_head(cfg))
    # Hand: IoU of every anchor with the object; the best ones.
    lt = np.maximum(anchors[:, :2], gt_box[:2])
    rb = np.minimum(anchors[:, 2:], gt_box[2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = (anchors[:, 2:] - anchors[:, :2]).prod(1)
    ious = inter / (area + 160.0 - inter)
    best = set(np.flatnonzero(np.isclose(ious, ious.max(), rtol=1e-5)))
    assert ious.max() == pytest.approx(160 / 1024, rel=1e-5)
    # The three tie up to float32 rounding of the anchors' extents, which
    # decides among them (in detectron2 as here).
    assert len(best) == 3 and ours and ours <= best
    assert all(anchors[i, 0] < 0 for i in best)  # all cross the border
    cfg.model.train_cfg.rpn.allowed_border = 0
    cfg.model.train_cfg.rpn.assigner.min_pos_iou = 0.3
    assert positives(_rpn_head(cfg))[0] == set()


def test_stage3_box_weights_are_exact() -> None:
    """BBOX_REG_WEIGHTS (30, 30, 15, 15): stds 1/30 and 1/15 exactly; a
    unit delta moves a 60 px box's centre by 60 / 30 = 2 px."""
    stage = load(COCO).model.roi_head.bbox_head[2]
    assert stage.bbox_coder.target_stds == [1 / 30, 1 / 30, 1 / 15, 1 / 15]
    coder = MODELS.build(stage).bbox_coder
    moved = coder.decode(torch.tensor([[0., 0., 60., 60.]]),
                         torch.tensor([[1., 0., 0., 0.]]))
    assert moved.tolist() == [[2.0, 0.0, 62.0, 60.0]]


def test_federated_loss_counts_the_background() -> None:
    """get_fed_loss_classes: unique labels (the background among them)
    plus draws up to 50; with background RoIs, 49 foreground classes."""
    loss_cfg = load(LVIS).model.roi_head.bbox_head[0].loss_cls
    assert loss_cfg.background_counts and loss_cfg.num_sampled_classes == 50
    loss = FederatedLoss(num_classes=200, class_freq=[1.0] * 200,
                         num_sampled_classes=50, background_counts=True)
    torch.manual_seed(0)
    with_bg = loss.sample_classes(torch.tensor([3, 7, 200, 200]))
    without_bg = loss.sample_classes(torch.tensor([3, 7, 7]))
    assert len(with_bg) == 49 and len(without_bg) == 50
    assert {3, 7} <= set(with_bg.tolist())
    default = FederatedLoss(num_classes=200, class_freq=[1.0] * 200)
    assert len(default.sample_classes(torch.tensor([3, 200]))) == 50


def test_every_parameter_is_weight_decayed() -> None:
    """optimizer.params.overrides = {}, weight_decay_norm = None: norms,
    biases, pos_embed and rel-pos tables decayed like the weights."""
    from mmengine.optim import build_optim_wrapper
    cfg = load(COCO)
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        layer_decay_rate=0.9, no_decay_1d=False, no_decay_names=())
    model = EVAViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                             mlp_hidden_dim=64),
                   img_size=64, out_type='featmap', with_cls_token=False,
                   rel_pos='decomposed', window_size=2,
                   global_block_indexes=(1, ))
    wrapper_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')
    wrapper_cfg['paramwise_cfg'] = dict(wrapper_cfg['paramwise_cfg'],
                                        backbone_prefix='')
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    decays = {
        name: group['weight_decay']
        for group in wrapper.param_groups if 'param_names' in group
        for name in group['param_names']
    }
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(decays) == sorted(trainable)
    assert set(decays.values()) == {0.1}
    assert {'pos_embed', 'blocks.0.norm1.bias',
            'blocks.1.attn.rel_pos_h'} <= set(decays)
    # ViTDet's B/L recipes keep the default exemptions.
    vitb = load(CONFIGS / 'eva-b-p16_cascade-mask-rcnn_lsj-1024_coco.py')
    assert vitb.optim_wrapper.paramwise_cfg == dict(layer_decay_rate=0.7)


@pytest.mark.parametrize('config', [COCO_1536, LVIS_1536])
def test_1536_test_resizes_rel_pos_the_beit_way(config: Path) -> None:
    """The 1536 px configs build a 96 x 96 model whose global tables are
    the 1280 px ones (159 rows) resized with EVA's cubic BEiT resize on
    loading; window tables (31 rows) load unchanged."""
    backbone = load(config).model.backbone
    assert (backbone.img_size, backbone.rel_pos_resize) == (1536, 'beit')
    kwargs = dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                            mlp_hidden_dim=64),
                  out_type='featmap', with_cls_token=False,
                  rel_pos='decomposed', window_size=4,
                  global_block_indexes=(1, ))
    torch.manual_seed(0)
    trained = EVAViT(img_size=160, **kwargs)
    with torch.no_grad():
        for block in trained.blocks:
            block.attn.rel_pos_h.normal_()
    tested = EVAViT(img_size=192, rel_pos_resize='beit', **kwargs)
    tested.load_state_dict(trained.state_dict())
    source = trained.blocks[1].attn.rel_pos_h.detach()
    assert source.shape[0] == 19
    torch.testing.assert_close(tested.blocks[1].attn.rel_pos_h.detach(),
                               resize_rel_pos(source, 23, 'beit'))
    assert torch.equal(tested.blocks[0].attn.rel_pos_h,
                       trained.blocks[0].attn.rel_pos_h)
    assert not torch.allclose(tested.blocks[1].attn.rel_pos_h,
                              resize_rel_pos(source, 23))
