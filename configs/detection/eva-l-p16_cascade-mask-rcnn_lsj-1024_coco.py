# The EVA COCO recipe with a ViT-L backbone: the ViT-B variant with
# ViTDet's ViT-L numbers (detectron2 projects/ViTDet/configs/COCO/
# cascade_mask_rcnn_vitdet_l_100ep.py). ViTDet reports 57.6 box AP / 50.0
# mask AP on COCO val (MAE ImageNet-1K weights, hard NMS; projects/ViTDet/
# README.md).
_base_ = ['./eva-b-p16_cascade-mask-rcnn_lsj-1024_coco.py']

model = dict(
    backbone=dict(
        arch='large',
        global_block_indexes=(5, 11, 17, 23),  # "5, 11, 17, 23 for global"
        drop_path_rate=0.4),  # ViTDet ViT-L
    neck=dict(in_channels=1024))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))  # ViT-L

# Global batch 64 = 64 GPUs x 1 image (ViTDet), auto_scale_lr's base.
