# Objects365 v2 detection (365 categories, boxes only) with the COCO LSJ
# pipeline at 1024 px: the data of EVA-01's intermediate detection
# fine-tuning (EVA-01/det/README.md, eva_o365.pth). Layout as mmdet's
# configs/_base_/datasets/objects365v2_detection.py.
_base_ = ['./coco-instance_lsj-1024.py']

dataset_type = 'Objects365V2Dataset'
data_root = 'data/Objects365/Obj365_v2/'

# The COCO LSJ pipelines without masks.
train_pipeline = [
    dict(t, with_mask=False) if t['type'] == 'LoadAnnotations' else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, with_mask=False) if t['type'] == 'LoadAnnotations' else t
    for t in _base_.test_pipeline
]
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/zhiyuan_objv2_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        train_dataloader['dataset'],
        ann_file='annotations/zhiyuan_objv2_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(
    ann_file=data_root + 'annotations/zhiyuan_objv2_val.json',
    metric='bbox')
test_evaluator = val_evaluator
