# Kinetics list files as in the official EVA-01/video README:
# data/k400/{train,val}/<class>/<video> and data/k400_{train,val}.txt with
# "<path> <label>" lines. Derived configs change the paths and num_classes.
# Every step follows EVA-01/video/datasets/build.py:237-331.
dataset_type = 'VideoDataset'
data_root = 'data/k400'
ann_file_train = 'data/k400_train.txt'
ann_file_val = 'data/k400_val.txt'
clip_len = 16

train_pipeline = [
    dict(type='eva_mm.VideoInit'),
    # One random frame from each of clip_len equal segments (the official
    # SampleFrames(clip_len=1, num_clips=NUM_FRAMES), TSN sampling).
    dict(type='eva_mm.TSNSample', clip_len=clip_len),
    dict(type='eva_mm.VideoDecode'),
    # Short side int(256 / 224 * 224) = 256, then a crop of width and height
    # drawn from (1, .875, .75, .66) x short side (neighbouring scales only)
    # at one of five fixed places, resized to 224 (build.py:258-268).
    dict(type='Resize', scale=(-1, 256)),
    dict(
        type='MultiScaleCrop',
        input_size=224,
        scales=(1, 0.875, 0.75, 0.66),
        random_crop=False,
        max_wh_scale_gap=1),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    # AUG.COLOR_JITTER 0.8: with probability 0.8 per clip, every frame gets
    # its own torchvision-style ColorJitter(0.4, 0.4, 0.2, 0.1) draw
    # (pipeline.py:1772-1786).
    dict(
        type='RandomApply',
        transforms=[
            dict(
                type='eva_mm.ColorJitter',
                brightness=0.4,
                contrast=0.4,
                saturation=0.2,
                hue=0.1,
                per_frame=True)
        ],
        prob=0.8),
    # AUG.GRAY_SCALE 0.2: the whole clip turned to grayscale with
    # probability 0.2 (pipeline.py:1794-1806).
    dict(type='eva_mm.RandomGrayscale', prob=0.2),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
# Validation during training: the middle frame of each segment, short side
# 256, centre crop 224 (build.py:300-306).
val_pipeline = [
    dict(type='eva_mm.VideoInit'),
    dict(type='eva_mm.TSNSample', clip_len=clip_len, test_mode=True),
    dict(type='eva_mm.VideoDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
# TEST.NUM_CLIP 4 x TEST.NUM_CROP 3: four views, each an independent random
# TSN draw as in the official multi-view test (build.py:309-325), and three
# 224 crops of the short side resized to 224. The official draws differ
# from run to run; a seed fixes them, the same views in every run:
#   --cfg-options test_dataloader.dataset.pipeline.1.seed=0
test_pipeline = [
    dict(type='eva_mm.VideoInit'),
    dict(
        type='eva_mm.TSNSample',
        clip_len=clip_len,
        num_views=4,
        test_mode=True),
    dict(type='eva_mm.VideoDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]

# The per-GPU batch and the accumulation of the official runs are set by the
# stage configs (global batch 256 in every stage).
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
# Validation and test: the training loader over the validation list, in
# order, each with its pipeline.
val_dataloader = dict(
    train_dataloader,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        train_dataloader['dataset'],
        ann_file=ann_file_val,
        pipeline=val_pipeline,
        test_mode=True))
test_dataloader = dict(
    val_dataloader,
    dataset=dict(val_dataloader['dataset'], pipeline=test_pipeline))
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator
