# EVA-g Cascade Mask R-CNN on LVIS v1, LSJ at 1024 px: the official EVA-01
# LVIS recipe (EVA-01/det/projects/ViTDet/configs/LVIS/
# cascade_mask_rcnn_vitdet_eva_1536.py, "official" below, on top of the COCO
# one) at ViTDet's 1024 px. The paper's LVIS numbers come from 1280 px
# training (eva-g-p16_cascade-mask-rcnn_lsj-1280_lvis-v1.py).
_base_ = [
    '../_base_/models/cascade-mask-rcnn_eva-g-p16_simple-fpn.py',
    '../_base_/datasets/lvis-v1-instance_lsj-1024.py',
    '../_base_/schedules/eva-det_adamw-layer-decay_45k.py'
]

image_size = (1024, 1024)
num_classes = 1203
# Sigmoid classification with the federated loss (use_sigmoid_ce=True,
# use_fed_loss=True): each image's loss covers its ground-truth categories
# and 50 more sampled by training-set image frequency ** 0.5
# (get_fed_loss_cls_weights(..., 0.5); detectron2's default
# fed_loss_num_classes=50).
federated_loss = dict(
    type='eva_mm.FederatedLoss',
    num_classes=num_classes,
    ann_file=_base_.data_root + 'annotations/lvis_v1_train.json',
    num_sampled_classes=50,
    freq_weight_power=0.5,
    loss_weight=1.0,
    # The background takes one of the 50 places when the batch has
    # background RoIs (official roi_heads/fast_rcnn.py:408-420).
    background_counts=True)

model = dict(
    # See eva-g-p16_cascade-mask-rcnn_lsj-1024_coco.py: square padding.
    data_preprocessor=dict(pad_size_divisor=image_size[0]),
    backbone=dict(img_size=image_size[0]),
    roi_head=dict(
        bbox_head=[
            dict(stage, num_classes=num_classes, loss_cls=federated_loss)
            for stage in _base_.model.roi_head.bbox_head
        ],
        mask_head=dict(num_classes=num_classes)),
    test_cfg=dict(
        rcnn=dict(
            # test_score_thresh=0.02, test_topk_per_image=300 (ViTDet's
            # LVIS configs, e.g. projects/ViTDet/configs/LVIS/
            # cascade_mask_rcnn_vitdet_l_100ep.py).
            score_thr=0.02,
            max_per_img=300,
            # The official LVIS evaluation command uses maskness but not
            # soft-NMS (EVA-01/det/README.md): detectron2's hard NMS at 0.5.
            nms=dict(_delete_=True, type='nms', iou_threshold=0.5))))

# Schedule: train.max_iter = 75001, milestones [70000, 75000], warm-up 250
# iterations, lr 2e-4 (official); the rest as the COCO schedule.
max_iters = 75001
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(_base_.param_scheduler[0], end=250),
    dict(_base_.param_scheduler[1], end=max_iters, milestones=[70000, 75000])
]

# EVA-01 starts LVIS from its Objects365 detector too (EVA-01/det/README.md,
# train.init_checkpoint=eva_o365.pth): set load_from to the checkpoint of
# eva-g-p16_cascade-rcnn_lsj-1024_objects365.py (see the COCO config).
load_from = None

# Global batch 64 = 8 nodes x 8 GPUs x 1 image, no gradient accumulation
# (the official LVIS config takes the COCO dataloader, total_batch_size =
# 64); auto_scale_lr.base_batch_size = 64 (schedule base).
