# EVA-g Cascade Mask R-CNN on COCO 2017, trained with LSJ at 1024 px: the
# EVA-01 recipe (official EVA-01 det config EVA-01/det/projects/ViTDet/
# configs/COCO/cascade_mask_rcnn_vitdet_eva_1536.py) at ViTDet's 1024 px
# training size. The paper's COCO numbers come from 1280 px training
# (eva-g-p16_cascade-mask-rcnn_lsj-1280_coco.py).
_base_ = [
    '../_base_/models/cascade-mask-rcnn_eva-g-p16_simple-fpn.py',
    '../_base_/datasets/coco-instance_lsj-1024.py',
    '../_base_/schedules/eva-det_adamw-layer-decay_45k.py'
]

image_size = (1024, 1024)
model = dict(
    # Every image is at most image_size per side (the LSJ crop in training,
    # the long-side resize at test), so padding to a multiple of image_size
    # pads each batch to exactly image_size x image_size, with zeros after
    # normalisation: ViTDet's square padding (square_pad).
    data_preprocessor=dict(pad_size_divisor=image_size[0]),
    backbone=dict(img_size=image_size[0]))

# EVA-01 fine-tunes on COCO from its Objects365 detector (EVA-01/det/
# README.md: train.init_checkpoint=eva_o365.pth). Point load_from at the
# checkpoint of eva-g-p16_cascade-rcnn_lsj-1024_objects365.py: the mask
# head, new here, stays randomly initialised and the 365-class box
# predictors do not fit 80 classes, which mmengine reports and skips. To start
# from the MIM weights instead, convert them as the official eva_psz14to16.pt
# (docs/detection.md):
#   python tools/model_converters/convert_eva.py --src-format official \
#       eva_psz14.pt eva-g-p16.pth --patch-size 16 --img-size 224
# and set model.backbone.init_cfg=dict(type='Pretrained',
# checkpoint='eva-g-p16.pth').
load_from = None

# Global batch 64 = 8 nodes x 8 GPUs x 1 image, no gradient accumulation
# (official dataloader.train.total_batch_size = 64);
# auto_scale_lr.base_batch_size = 64 (schedule base).
