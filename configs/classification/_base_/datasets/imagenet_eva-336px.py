# ImageNet-1K fine-tuning and evaluation data for EVA-01 at 336 px.
# Train: RandomResizedCrop(scale 0.08-1) + flip + RandAugment
# rand-m9-mstd0.5-inc1 (--scale 0.08 1.0, --aa rand-m9-mstd0.5-inc1, no
# random erasing: --reprob 0.0). Test: crop_pct=1.0, i.e. resize the short
# edge to 336 and center-crop 336. All from EVA-01/eva/README.md.
dataset_type = 'ImageNet'
img_size = 336
# OpenAI CLIP mean/std: the normalisation of EVA-01's evaluation code
# (EVA-01/eva/robustness_dataset.py) and of timm's eva_giant_patch14_* cfgs.
mean = [0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255]
std = [0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255]
data_preprocessor = dict(num_classes=1000, mean=mean, std=std, to_rgb=True)

# mmpretrain's spelling of timm's rand-m9-mstd0.5-inc1 (pad with the mean,
# in the BGR order of the loaded image).
rand_augment = dict(
    type='RandAugment',
    policies='timm_increasing',
    num_policies=2,
    total_level=10,
    magnitude_level=9,
    magnitude_std=0.5,
    hparams=dict(
        pad_val=[round(x) for x in mean[::-1]], interpolation='bicubic'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.08, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    rand_augment,
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=img_size,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
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
