# The EVA LVIS recipe with a ViT-B backbone: the model and data of
# eva-g-p16_cascade-mask-rcnn_lsj-1024_lvis-v1.py with ViTDet's ViT-B
# numbers (detectron2 projects/ViTDet/configs/LVIS/
# cascade_mask_rcnn_vitdet_b_100ep.py, on mask_rcnn_vitdet_b_100ep.py).
# ViTDet reports 43.0 box AP / 38.9 mask AP on LVIS v1 val (MAE ImageNet-1K
# weights; projects/ViTDet/README.md).
_base_ = ['./eva-g-p16_cascade-mask-rcnn_lsj-1024_lvis-v1.py']

model = dict(
    backbone=dict(
        arch='base',
        window_size=14,
        global_block_indexes=(2, 5, 8, 11),
        drop_path_rate=0.1,
        with_cp=False),
    neck=dict(in_channels=768))

# 100 epochs = 156250 iterations of 64 images, steps at 138889 and 150463,
# 250 warm-up iterations, lr 2e-4, layer decay 0.7 (ViTDet LVIS ViT-B).
max_iters = 156250
train_cfg = dict(max_iters=max_iters)
# ViTDet's weight-decay exemptions, see the ViT-B COCO config; batch 64
# (64 GPUs x 1 image), auto_scale_lr's base as for EVA-g.
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.7))
param_scheduler = [
    _base_.param_scheduler[0],
    dict(
        _base_.param_scheduler[1],
        end=max_iters,
        milestones=[138889, 150463])
]
