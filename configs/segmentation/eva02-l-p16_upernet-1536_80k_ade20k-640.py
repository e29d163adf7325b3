# EVA-02-L UperNet with 1536-channel heads on ADE20K, 640 x 640 crops: the
# official eva02_L_ade_seg_upernet_sz640 (EVA-02/seg/configs/eva02/
# upernet/upernetpro_eva02_large_24_640_slide_80k.py, "official" below;
# EVA-02/seg/README.md: 60.1 mIoU single-scale). The 512 px EVA-02-L
# config with mmseg's 640 px ADE20K data (the official ade20k_640x640.py:
# scale (2560, 640)).
_base_ = ['./eva02-l-p16_upernet_80k_ade20k-512.py']

crop_size = (640, 640)  # crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size[0]),  # img_size=640
    decode_head=dict(channels=1536),  # channels=1536
    auxiliary_head=dict(channels=1536),  # channels=1536
    # stride=(426, 426) (official test_cfg).
    test_cfg=dict(crop_size=crop_size, stride=(426, 426)))

# The 512 px pipelines at 640: scale (2560, 640), 640 crops.
train_pipeline = [
    dict(t, scale=(2560, 640)) if t['type'] == 'RandomResize' else
    dict(t, crop_size=crop_size) if t['type'] == 'RandomCrop' else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, scale=(2560, 640)) if t['type'] == 'Resize' else t
    for t in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
