# A CPU-sized video EVAViT on generated clips of moving shapes: the same
# Recognizer3D, pipeline steps and 4 x 3-view test as the Kinetics configs,
# with a tiny backbone at 32 px. Generate the data with
#   python tests/test_video/moving_shapes.py data/moving_shapes
# The classes are a shape and a direction of motion, so telling them apart
# needs the time axis (and horizontal flips would swap labels: none here).
_base_ = ['mmaction::_base_/default_runtime.py']

custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)

num_classes = 6
clip_len = 8

model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='eva_mm.EVAViT',
        arch=dict(embed_dims=64, num_layers=2, num_heads=2,
                  mlp_hidden_dim=128),
        img_size=32,
        patch_size=8,
        num_frames=clip_len,
        out_type='avg_featmap',
        use_fc_norm=True,
        final_norm=False,
        tuple_output=False,
        drop_path_rate=0.1),
    cls_head=dict(
        type='TimeSformerHead',
        num_classes=num_classes,
        in_channels=64,
        label_smooth_eps=0.1,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        format_shape='NCTHW'))

data_root = 'data/moving_shapes'
train_pipeline = [
    dict(type='eva_mm.VideoInit'),
    dict(type='UniformSample', clip_len=clip_len),
    dict(type='eva_mm.VideoDecode'),
    dict(type='Resize', scale=(-1, 40)),
    dict(type='RandomResizedCrop', area_range=(0.5, 1.0)),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = [
    dict(type='eva_mm.VideoInit'),
    # 4 temporal views x 3 spatial crops, averaged by the head.
    dict(type='UniformSample', clip_len=clip_len, num_clips=4,
         test_mode=True),
    dict(type='eva_mm.VideoDecode'),
    dict(type='Resize', scale=(-1, 32)),
    dict(type='ThreeCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='VideoDataset',
        ann_file=f'{data_root}/train_list.txt',
        data_prefix=dict(video=f'{data_root}/videos'),
        pipeline=train_pipeline))
# The training loader over the validation list, in order, one clip a batch.
test_dataloader = dict(
    train_dataloader,
    batch_size=1,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        train_dataloader['dataset'],
        ann_file=f'{data_root}/val_list.txt',
        pipeline=test_pipeline,
        test_mode=True))
val_dataloader = test_dataloader
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.98),
                   weight_decay=0.05),
    constructor='eva_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.95))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2, val_interval=2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [dict(type='ConstantLR', factor=1.0)]
default_hooks = dict(
    # Skip unreadable training files (logged, counted, summarised; stops
    # past the limits); check the val/test files first (docs/bad_data.md).
    unreadable_data=dict(type='eva_mm.UnreadableDataHook'),
    checkpoint=dict(interval=2), logger=dict(interval=1))
randomness = dict(seed=0)
