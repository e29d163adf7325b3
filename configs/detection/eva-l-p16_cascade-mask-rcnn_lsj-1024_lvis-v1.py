# The EVA LVIS recipe with a ViT-L backbone: the ViT-B variant with
# ViTDet's ViT-L numbers (detectron2 projects/ViTDet/configs/LVIS/
# cascade_mask_rcnn_vitdet_l_100ep.py). ViTDet reports 49.2 box AP / 44.5
# mask AP on LVIS v1 val (MAE ImageNet-1K weights; projects/ViTDet/
# README.md).
_base_ = ['./eva-b-p16_cascade-mask-rcnn_lsj-1024_lvis-v1.py']

model = dict(
    backbone=dict(
        arch='large',
        global_block_indexes=(5, 11, 17, 23),
        drop_path_rate=0.4),
    neck=dict(in_channels=1024))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))

# Global batch 64 = 64 GPUs x 1 image (ViTDet), auto_scale_lr's base.
