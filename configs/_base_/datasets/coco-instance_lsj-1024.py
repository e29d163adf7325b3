# COCO 2017 instance segmentation with large-scale jitter (LSJ) at 1024 px,
# the data recipe of ViTDet and EVA-01 (detectron2
# projects/ViTDet/configs/common/coco_loader_lsj.py, which the official EVA-01
# det configs import): random flip, resize to 0.1-2.0 x 1024 keeping the
# aspect ratio, a 1024 x 1024 crop, and square zero padding after
# normalisation. Test: the long side resized to 1024, padded the same way.
#
# On mmdet's COCO instance data base (data root, files, loaders, CocoMetric),
# with EVA's pipelines. mmdet's configs/common/lsj-100e_coco-instance.py, its
# LSJ form of the same base, is not inherited: it carries a 25-epoch SGD
# schedule and the runtime, whose keys would clash ("Duplicate key is not
# allowed among bases") with the schedule base every detection config lists
# beside this one, and its pipelines differ from EVA's anyway (flip last,
# bitmap masks).
_base_ = ['mmdet::_base_/datasets/coco_instance.py']

image_size = (1024, 1024)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    # detectron2 keeps COCO polygons as polygons (cropped and rasterised per
    # RoI); bitmaps of 2x-upscaled images would cost memory for nothing.
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True,
         poly2mask=False),
    dict(type='RandomFlip', prob=0.5),
    # PIL's bilinear resize, which filters when shrinking, as detectron2's
    # ResizeTransform (EVA-01/det/detectron2/data/transforms/
    # augmentation_impl.py:213, transform.py:99-122); mmcv's default cv2
    # bilinear samples 4 pixels whatever the scale.
    dict(
        type='RandomResize',
        scale=image_size,
        ratio_range=(0.1, 2.0),
        keep_ratio=True,
        backend='pillow'),
    # 'absolute_range' with crop_size=image_size crops min(side, 1024): the
    # fixed-size crop of detectron2's FixedSizeCrop, whose offset is one
    # uniform draw for both axes (augmentation_impl.py:328);
    # type='RandomCrop' draws them independently (mmdet's).
    dict(
        type='eva_mm.Detectron2RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs')
]
# mmdet's test pipeline with the long side resized to 1024 (PIL bilinear,
# as detectron2's ResizeShortestEdge) and polygon masks.
test_pipeline = [
    dict(t, scale=image_size, backend='pillow') if t['type'] == 'Resize' else
    dict(t, poly2mask=False) if t['type'] == 'LoadAnnotations' else t
    for t in _base_.test_pipeline
]

train_dataloader = dict(
    # 1 image per GPU x 64 GPUs = 64 (official EVA-01 det config:
    # dataloader.train.total_batch_size = 64, 8 nodes x 8 GPUs).
    batch_size=1,
    num_workers=4,
    sampler=dict(type='InfiniteSampler'),
    # mmdet's AspectRatioBatchSampler left out: at one image per GPU
    # grouping changes nothing (the official loader groups by aspect ratio,
    # detectron2's build_detection_train_loader default), and with more per
    # GPU the LSJ crops are padded to one square anyway.
    batch_sampler=None,
    dataset=dict(
        # detectron2 drops images without annotations only (no minimum
        # image size; filter_empty_annotations in data/build.py).
        filter_cfg=dict(_delete_=True, filter_empty_gt=True),
        pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(
    # detectron2's COCOEvaluator: maxDets (1, 10, 100), so AP50, AP75 and
    # APs/m/l are at 100 detections as AP is (detectron2/evaluation/
    # coco_evaluation.py:111-115); mmdet's (100, 300, 1000) scores those at
    # 1000.
    proposal_nums=(1, 10, 100))
test_evaluator = val_evaluator
