# COCO-Stuff-164K (171 classes) at EVA's 896 x 896 crops, mmseg's
# COCOStuffDataset and transforms. Sizes and augmentation follow the official
# EVA-01 COCO-Stuff config (baaivision/EVA, EVA-01/seg/configs/
# coco_stuff164k/eva_mask2former_896_60k_cocostuff164k_ss.py, "EVA COCO-Stuff
# config" below). Labels are mmseg's converted *_labelTrainIds.png (0..170,
# 255 ignored): tools/dataset_converters/coco_stuff164k.py of mmseg.
_base_ = ['mmseg::_base_/datasets/coco-stuff164k.py']

crop_size = (896, 896)  # EVA COCO-Stuff config: crop_size
# EVA COCO-Stuff config: Resize img_scale=(3584, 896), ratio (0.5, 2.0).
scale = (3584, 896)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize', scale=scale, ratio_range=(0.5, 2.0),
        keep_ratio=True),
    # EVA COCO-Stuff config: RandomCrop cat_max_ratio=0.75.
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
# Single scale, as the EVA COCO-Stuff config's reported 53.4 mIoU: short side
# 896, sides to a multiple of 32 (ResizeToMultiple) so that every sliding
# window fits the patch grid.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
# tools/test.py --tta: the ADE20K multi-scale + flip set (512/896 ...
# 1280/896 with flip, EVA-01 ADE20K config); EVA reports no COCO-Stuff
# multi-scale number.
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
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')]
        ])
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
