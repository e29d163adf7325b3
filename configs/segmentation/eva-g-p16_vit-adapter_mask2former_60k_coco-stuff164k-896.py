# EVA-01 semantic segmentation, stage 1: EVA-g ViT-Adapter + Mask2Former on
# COCO-Stuff-164K (171 classes) at 896 x 896, 53.4 mIoU single scale
# (arXiv:2211.07636, Table 5). Numbers: the official config (baaivision/EVA,
# EVA-01/seg/configs/coco_stuff164k/eva_mask2former_896_60k_cocostuff164k_ss.py,
# "EVA config") and the paper's segmentation settings (issue #5).
_base_ = [
    '../_base_/models/mask2former_eva-vit-adapter.py',
    '../_base_/datasets/coco-stuff164k_896.py',
    '../_base_/schedules/eva-seg_adamw-layer-decay_poly.py',
    'mmseg::_base_/default_runtime.py',
]

# The MIM-pretrained EVA-g at patch 16 and 896 px (official eva_psz14.pt,
# converted as in docs/segmentation.md).
pretrained = 'checkpoints/eva-g-p16-896.pth'
num_classes = 171  # COCO-Stuff-164K
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))

# EVA config: lr=1.5e-5, layer_decay_rate=0.95 (over the 40 blocks).
optim_wrapper = dict(
    optimizer=dict(lr=1.5e-5), paramwise_cfg=dict(layer_decay_rate=0.95))
# EVA config: schedule_60k with warmup_iters=1500, the schedule base's.
# Total batch 32 (EVA config: samples_per_gpu=1, "a total bsz of 32"):
# 1 image per GPU x 32 GPUs. tools/train.py --cfg-options
# auto_scale_lr.enable=True rescales the lr for another total.
train_dataloader = dict(batch_size=1)
auto_scale_lr = dict(enable=False, base_batch_size=32)
# tools/test.py --tta: multi-scale + flip with every view padded to at
# least 896 x 896 (raw value 0, before normalisation) and the padding's
# prediction cut off, as the official multi-scale test (PadShortSide,
# EVA-01 seg/configs/ade20k/eva_mask2former_896_20k_coco164k2ade20k_ms.py).
tta_model = dict(type='eva_mm.PadShortSideSegTTAModel', size=896, pad_val=0)
