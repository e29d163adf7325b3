# EVA-02-L Cascade Mask R-CNN on COCO 2017, LSJ at 1024 px: the official
# head-to-head detector eva02_L_coco_bsl (EVA-02/det/projects/ViTDet/
# configs/eva2_mim_to_coco/eva2_coco_cascade_mask_rcnn_vitdet_l_4attn_1024
# _lrd0p8.py, "official" below; EVA-02/det/README.md: 59.2 box AP / 50.8
# mask AP on COCO val). The EVA-01 COCO recipe (same Cascade heads, LSJ
# data, AdamW with layer decay and weight decay on every parameter) with
# the EVA-02 backbone and EVA-02's numbers.
_base_ = [
    './eva-g-p16_cascade-mask-rcnn_lsj-1024_coco.py',
    '../_base_/models/eva02-p16_vitdet-backbone.py'
]

model = dict(
    backbone=_base_.eva02_det_backbone,
    neck=dict(in_channels=1024),
    # The official evaluation of the 1024 px detectors is detectron2's
    # default (EVA-02/det/README.md, no soft-NMS or maskness options):
    # NMS at 0.5, test_score_thresh=0.05 (cascade_mask_rcnn_vitdet_b_100ep
    # .py:37), 100 detections per image (FastRCNNOutputLayers'
    # test_topk_per_image default), mask scores = box scores.
    roi_head=dict(mask_head=dict(rescore_by_maskness=False)),
    test_cfg=dict(
        rcnn=dict(
            score_thr=0.05,
            nms=dict(_delete_=True, type='nms', iou_threshold=0.5),
            max_per_img=100)))

# Schedule (official lines 31-42): lr 6e-5, layer decay 0.8 over 24
# layers, 60k iterations, steps at 8/10 and 9/10, 1000 warm-up iterations.
max_iters = 60000
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(
    paramwise_cfg=dict(layer_decay_rate=0.8), optimizer=dict(lr=6e-5))
param_scheduler = [
    dict(_base_.param_scheduler[0], end=1000),
    dict(
        _base_.param_scheduler[1],
        end=max_iters,
        milestones=[max_iters * 8 // 10, max_iters * 9 // 10])
]
# Global batch 144 (dataloader.train.total_batch_size=144, official line
# 45; EVA-02/det/README.md) at 1 image per GPU; with another total batch,
# auto_scale_lr.enable=True scales the lr from this base.
auto_scale_lr = dict(base_batch_size=144)

# Start from the MIM weights eva02_L_pt_m38m_p14to16.pt (EVA-02/det/
# README.md), converted for this config (docs/eva02.md):
#   python tools/model_converters/convert_eva.py --src-format official-eva02 \
#       eva02_L_pt_m38m_p14to16.pt eva02-l-p16.pth --img-size 1024
# then model.backbone.init_cfg=dict(type='Pretrained',
# checkpoint='eva02-l-p16.pth').
load_from = None
