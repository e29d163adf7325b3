# The EVA COCO recipe with a ViT-B backbone, for less hardware: the model,
# data and test-time settings of eva-g-p16_cascade-mask-rcnn_lsj-1024_coco.py
# with ViTDet's ViT-B numbers (detectron2 projects/ViTDet/configs/COCO/
# cascade_mask_rcnn_vitdet_b_100ep.py and mask_rcnn_vitdet_b_100ep.py, the
# "ViTDet" below). ViTDet reports 54.0 box AP / 46.7 mask AP on COCO val for
# this model from MAE ImageNet-1K weights, with hard NMS (projects/ViTDet/
# README.md); EVA published no ViT-B detector.
_base_ = ['./eva-g-p16_cascade-mask-rcnn_lsj-1024_coco.py']

model = dict(
    backbone=dict(
        arch='base',
        window_size=14,  # ViTDet's window for ViT-B/L/H
        global_block_indexes=(2, 5, 8, 11),  # 2, 5, 8, 11 global (ViTDet)
        drop_path_rate=0.1,  # ViTDet ViT-B
        # ViTDet trains ViT-B without activation checkpointing (12.3 GB per
        # GPU at 1024 px).
        with_cp=False),
    neck=dict(in_channels=768))

# ViTDet's schedule: 100 epochs = 184375 iterations of 64 images, steps at
# 163889 and 177546, 250 warm-up iterations; AdamW lr 1e-4 with layer decay
# 0.7 over 12 layers.
max_iters = 184375
train_cfg = dict(max_iters=max_iters)
# ViTDet exempts norms and pos_embed from weight decay (weight_decay_norm
# = 0.0 in common/optim.py, overrides = {"pos_embed": {"weight_decay": 0.0}}
# in mask_rcnn_vitdet_b_100ep.py): the constructor's default exemptions
# (biases too), instead of EVA-g's decay on everything.
optim_wrapper = dict(
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.7),
    optimizer=dict(lr=1e-4))
# ViTDet's batch: 64 images per step (64 GPUs x 1 image, total_batch_size
# = 64 in mask_rcnn_vitdet_b_100ep.py), auto_scale_lr's base as for EVA-g.
param_scheduler = [
    dict(_base_.param_scheduler[0], end=250),
    dict(
        _base_.param_scheduler[1],
        end=max_iters,
        milestones=[163889, 177546])
]
