# ADE20K (150 classes) at EVA's 896 x 896 crops, mmseg's ADE20KDataset and
# transforms. Sizes and augmentation follow the official EVA-01 ADE20K config
# (baaivision/EVA, EVA-01/seg/configs/ade20k/
# eva_mask2former_896_40k_coco164k2ade20k_ms_relpos_layerscale_9dec.py,
# "EVA ADE config" below).
_base_ = ['mmseg::_base_/datasets/ade20k.py']

crop_size = (896, 896)  # EVA ADE config: crop_size
# EVA ADE config: Resize img_scale=(3584, 896), ratio_range=(0.5, 2.0).
scale = (3584, 896)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    # Label 0 ("other") becomes 255 and is ignored (EVA ADE config).
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize', scale=scale, ratio_range=(0.5, 2.0),
        keep_ratio=True),
    # EVA ADE config: RandomCrop cat_max_ratio=0.75.
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
# Single scale: the short side to 896, then sides to a multiple of 32 as in
# the EVA ADE config (ResizeToMultiple), so that every sliding window fits the
# patch grid and the adapter's stride-32 level. The label stays at its
# original size; predictions are resized back to it.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
# Multi-scale + flip (tools/test.py --tta): the EVA ADE config's img_ratios
# 512/896 ... 1280/896 of (3584, 896) with flip=True; its reported 62.3 mIoU.
img_ratios = [512 / 896, 640 / 896, 768 / 896, 1.0, 1024 / 896, 1152 / 896,
              1280 / 896]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(
                    type='Resize',
                    scale=(int(scale[0] * r), int(scale[1] * r)),
                    keep_ratio=True) for r in img_ratios
            ],
            [dict(type='ResizeToMultiple', size_divisor=32)],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')]
        ])
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
