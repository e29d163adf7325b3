# LVIS v1 instance segmentation (1203 categories) with the COCO LSJ pipeline
# at 1024 px, as the official EVA-01 LVIS config reuses its COCO loader
# (EVA-01/det/projects/ViTDet/configs/LVIS/
# cascade_mask_rcnn_vitdet_eva_1536.py) and ViTDet's LVIS configs
# (projects/ViTDet/configs/LVIS/) do. LVIS images are COCO 2017 images:
# data_root holds annotations/lvis_v1_{train,val}.json and the train2017/
# and val2017/ folders their file names point into.
_base_ = ['./coco-instance_lsj-1024.py']

dataset_type = 'eva_mm.LVISV1Dataset'
data_root = 'data/lvis_v1/'

train_dataloader = dict(
    # Repeat factor sampling, repeat_thresh=0.001 (official LVIS config):
    # an image is repeated by max(1, sqrt(0.001 / f)) over its rarest
    # category's image frequency f, rounded stochastically each epoch.
    sampler=dict(
        _delete_=True,
        type='eva_mm.RepeatFactorSampler',
        repeat_thr=0.001,
        shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img='')))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_val.json',
        data_prefix=dict(img='')))
test_dataloader = val_dataloader

val_evaluator = dict(
    _delete_=True,
    type='eva_mm.LVISMetric',
    ann_file=data_root + 'annotations/lvis_v1_val.json',
    metric=['bbox', 'segm'],
    # Mask APs/m/l by mask area: detectron2's LVISEvaluator drops the boxes
    # from mask results (evaluation/lvis_evaluation.py:355-363).
    segm_area_from_mask=True)
test_evaluator = val_evaluator
