# ImageNet-1K fine-tuning and evaluation data for EVA-01 at 336 px.
# Train: RandomResizedCrop(scale 0.08-1) + flip + RandAugment
# rand-m9-mstd0.5-inc1 (--scale 0.08 1.0, --aa rand-m9-mstd0.5-inc1, no
# random erasing: --reprob 0.0). Test: crop_pct=1.0, i.e. resize the short
# edge to 336 and center-crop 336. All from EVA-01/eva/README.md.
_base_ = [
    './eva_clip-norm_train-pipeline.py',
    '../../../_base_/datasets/clip-eval_224px.py',
]

dataset_type = 'ImageNet'
img_size = 336
data_preprocessor = dict(num_classes=1000)

# The shared pipeline (crop scale 0.08-1) at 336 px; its RandAugment step by
# name for pipelines composed elsewhere.
train_pipeline = [
    dict(t, scale=img_size) if t['type'] == 'RandomResizedCrop' else t
    for t in _base_.train_pipeline
]
rand_augment = train_pipeline[3]
# The shared evaluation transform at 336 px.
test_pipeline = [
    dict(t, scale=img_size) if t['type'] == 'ResizeEdge' else
    dict(t, crop_size=img_size) if t['type'] == 'CenterCrop' else t
    for t in _base_.test_pipeline
]

train_dataloader = dict(
    # Official global batch 512 = 4 nodes x 8 GPUs x 16 per GPU x 1
    # accumulation step (EVA-01/eva/README.md: total_bsz = 4*8*16,
    # update_freq=1; the same for 336 and 560 px).
    batch_size=16,
    num_workers=8,
    dataset=dict(
        type=dataset_type,
        data_root='data/imagenet',
        split='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
# The training loader over the validation split, in order.
val_dataloader = dict(
    train_dataloader,
    dataset=dict(
        train_dataloader['dataset'], split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
