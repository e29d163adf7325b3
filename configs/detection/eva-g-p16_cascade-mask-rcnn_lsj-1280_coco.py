# EVA-g Cascade Mask R-CNN on COCO 2017 with LSJ at 1280 px, the resolution
# of the paper's COCO results (official EVA-01 det config
# cascade_mask_rcnn_vitdet_eva_1536.py: img_size = 1280 "for correct dim in
# pos embed"). Official evaluation at 1536 px:
# eva-g-p16_cascade-mask-rcnn_lsj-1280_coco_test-1536.py. EVA-01/det/
# README.md reports on COCO val 64.2 box AP / 53.9 mask AP (35k iterations,
# eva_coco_det.pth) and 63.9 / 55.0 (45k, eva_coco_seg.pth).
_base_ = ['./eva-g-p16_cascade-mask-rcnn_lsj-1024_coco.py']

image_size = (1280, 1280)
model = dict(
    data_preprocessor=dict(pad_size_divisor=image_size[0]),
    backbone=dict(img_size=image_size[0]))

# The 1024 px pipelines with every size set to 1280.
train_pipeline = [
    dict(t, scale=image_size) if t['type'] == 'RandomResize' else
    dict(t, crop_size=image_size) if 'crop_size' in t else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, scale=image_size) if t['type'] == 'Resize' else t
    for t in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# Global batch 64 = 8 nodes x 8 GPUs x 1 image, no gradient accumulation
# (official dataloader.train.total_batch_size = 64);
# auto_scale_lr.base_batch_size = 64 (schedule base).
