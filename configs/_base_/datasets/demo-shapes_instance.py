# The generated demo shapes set
# (eva_mm.datasets.synthetic.generate_demo_shapes), read as COCO instance
# segmentation. tools/demo/run_demo.py draws it into data_root.
# On mmdet's COCO instance data base (loaders, CocoMetric).
_base_ = ['mmdet::_base_/datasets/coco_instance.py']

data_root = 'data/demo_shapes/'
image_size = 128
metainfo = dict(
    classes=('circle', 'square', 'triangle', 'star'),
    palette=[(220, 20, 60), (0, 130, 230), (30, 170, 60), (250, 170, 30)])

# The images are drawn at image_size already; Resize records the
# scale_factor that the heads need to map predictions back. Polygons stay
# polygons: mask targets are then cropped and rasterised per RoI instead of
# resampling full-image bitmaps.
train_pipeline = [
    dict(t, poly2mask=False) if t['type'] == 'LoadAnnotations' else
    dict(t, scale=(image_size, image_size)) if t['type'] == 'Resize' else
    dict(t, direction=['horizontal', 'vertical'])
    if t['type'] == 'RandomFlip' else t for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, poly2mask=False) if t['type'] == 'LoadAnnotations' else
    dict(t, scale=(image_size, image_size)) if t['type'] == 'Resize' else t
    for t in _base_.test_pipeline
]
# Decoding a 128 px PNG takes about a millisecond; worker processes would
# only compete with the model for the CPU cores.
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# The same loader over the training files, endlessly shuffled, 8 a batch.
train_dataloader = dict(
    val_dataloader,
    batch_size=8,
    sampler=dict(type='InfiniteSampler'),
    # Every image is a 128 px square: no aspect-ratio grouping.
    batch_sampler=None,
    dataset=dict(
        val_dataloader['dataset'],
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(_delete_=True, filter_empty_gt=True),
        pipeline=train_pipeline))

val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
