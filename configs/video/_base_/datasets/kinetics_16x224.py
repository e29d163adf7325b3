# Kinetics list files as in the official EVA-01/video README:
# data/k400/{train,val}/<class>/<video> and data/k400_{train,val}.txt with
# "<path> <label>" lines. Derived configs change the paths and num_classes.
dataset_type = 'eva_mm.RobustVideoDataset'
data_root = 'data/k400'
ann_file_train = 'data/k400_train.txt'
ann_file_val = 'data/k400_val.txt'
clip_len = 16

# X-CLIP (and so EVA) samples one frame from each of clip_len equal
# segments: mmaction2's UniformSample.
train_pipeline = [
    dict(type='eva_mm.VideoInit'),
    dict(type='UniformSample', clip_len=clip_len),
    dict(type='eva_mm.VideoDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    # AUG.COLOR_JITTER 0.8: colour jitter with probability 0.8, with the hue
    # range 0.1 (a fraction of the hue circle) of the official X-CLIP
    # ColorJitter that EVA-01/video uses; brightness, contrast and
    # saturation keep mmaction2's default strengths. eva_mm.ColorJitter is
    # mmaction2's with the hue shift fixed (mmaction2 1.2's overflows uint8
    # and raises under NumPy 2).
    dict(type='RandomApply',
         transforms=[dict(type='eva_mm.ColorJitter', hue=0.1)], prob=0.8),
    # AUG.GRAY_SCALE 0.2: the whole clip turned to grayscale with
    # probability 0.2.
    dict(type='eva_mm.RandomGrayscale', prob=0.2),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
# TEST.NUM_CLIP 4 TEST.NUM_CROP 3: four temporal views of clip_len
# segment-sampled frames, three 224 crops of the short side resized to 224.
test_pipeline = [
    dict(type='eva_mm.VideoInit'),
    dict(type='UniformSample', clip_len=clip_len, num_clips=4,
         test_mode=True),
    dict(type='eva_mm.VideoDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
val_pipeline = [
    dict(type='eva_mm.VideoInit'),
    dict(type='UniformSample', clip_len=clip_len, test_mode=True),
    dict(type='eva_mm.VideoDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]

# The official total batch 256 is 64 GPUs x 1 clip x 4 accumulation steps.
train_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_train,
        data_prefix=dict(video=data_root),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_val,
        data_prefix=dict(video=data_root),
        pipeline=val_pipeline,
        test_mode=True))
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_val,
        data_prefix=dict(video=data_root),
        pipeline=test_pipeline,
        test_mode=True))
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator
