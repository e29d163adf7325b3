# COCO 2017 instance segmentation with large-scale jitter (LSJ) at 1024 px,
# the data recipe of ViTDet and EVA-01 (detectron2
# projects/ViTDet/configs/common/coco_loader_lsj.py, which the official EVA-01
# det configs import): random flip, resize to 0.1-2.0 x 1024 keeping the
# aspect ratio, a 1024 x 1024 crop, and square zero padding after
# normalisation. Test: the long side resized to 1024, padded the same way.
# mmdet's configs/common/lsj-100e_coco-instance.py is the mmdet form of it.
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
image_size = (1024, 1024)
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    # detectron2 keeps COCO polygons as polygons (cropped and rasterised per
    # RoI); bitmaps of 2x-upscaled images would cost memory for nothing.
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True,
         poly2mask=False),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomResize',
        scale=image_size,
        ratio_range=(0.1, 2.0),
        keep_ratio=True),
    # 'absolute_range' with crop_size=image_size crops min(side, 1024): the
    # fixed-size crop of detectron2's FixedSizeCrop.
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True,
         poly2mask=False),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]

train_dataloader = dict(
    # 1 image per GPU x 64 GPUs = 64 (official EVA-01 det config:
    # dataloader.train.total_batch_size = 64, 8 nodes x 8 GPUs).
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        # detectron2 drops images without annotations only (no minimum
        # image size; filter_empty_annotations in data/build.py).
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric=['bbox', 'segm'],
    # detectron2's COCOEvaluator: maxDets (1, 10, 100), so AP50, AP75 and
    # APs/m/l are at 100 detections as AP is (detectron2/evaluation/
    # coco_evaluation.py:111-115); mmdet's (100, 300, 1000) scores those at
    # 1000.
    proposal_nums=(1, 10, 100),
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
