# COCO-Stuff-164K (171 classes) at EVA's 896 x 896 crops, mmseg's
# COCOStuffDataset and transforms. Sizes and augmentation follow the official
# EVA-01 COCO-Stuff config (baaivision/EVA, EVA-01/seg/configs/
# coco_stuff164k/eva_mask2former_896_60k_cocostuff164k_ss.py, "EVA COCO-Stuff
# config" below). Labels are mmseg's converted *_labelTrainIds.png (0..170,
# 255 ignored): tools/dataset_converters/coco_stuff164k.py of mmseg.
# The EVA COCO-Stuff config crops (crop_size 896, cat_max_ratio 0.75),
# resizes (img_scale (3584, 896), ratio (0.5, 2.0)) and augments as the EVA
# ADE20K one, so this is ade20k_896.py on mmseg's COCO-Stuff data set
# (mmseg::_base_/datasets/coco-stuff164k.py: type, root and folders).
_base_ = ['./ade20k_896.py']

dataset_type = 'COCOStuffDataset'
data_root = 'data/coco_stuff164k'
# Label 0 is a class here: LoadAnnotations without ADE's reduce_zero_label
# (deleted after use, not a config key).
_load_annotations = dict(type='LoadAnnotations')
train_pipeline = [
    _load_annotations if t['type'] == 'LoadAnnotations' else t
    for t in _base_.train_pipeline
]
# Single scale, as the EVA COCO-Stuff config's reported 53.4 mIoU: short side
# 896, sides to a multiple of 32 (ResizeToMultiple) so that every sliding
# window fits the patch grid.
test_pipeline = [
    _load_annotations if t['type'] == 'LoadAnnotations' else t
    for t in _base_.test_pipeline
]
# tools/test.py --tta: the ADE20K multi-scale + flip set (512/896 ...
# 1280/896 with flip, EVA-01 ADE20K config); EVA reports no COCO-Stuff
# multi-scale number.
tta_pipeline = [
    _base_.tta_pipeline[0],
    dict(
        _base_.tta_pipeline[1],
        transforms=[[_load_annotations]
                    if group[0]['type'] == 'LoadAnnotations' else group
                    for group in _base_.tta_pipeline[1]['transforms']])
]
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/train2017',
            seg_map_path='annotations/train2017'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
del _load_annotations
