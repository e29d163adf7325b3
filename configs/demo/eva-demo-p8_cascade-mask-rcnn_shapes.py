# The CPU demo (tools/demo/run_demo.py): a tiny EVA ViT (patch 8) Cascade Mask
# R-CNN trained from scratch on the generated shapes set at 128 px in a few
# minutes on a 2-core CPU. The base model shrunk: 4 blocks of width 128, a
# 3-level simple pyramid plus P6, 64-channel heads and small RoI samples;
# most of a CPU step is RoIAlign and the RoI heads, so RoI counts and the mask
# resolution are cut hardest.
_base_ = [
    '../_base_/models/cascade-mask-rcnn_eva-vit_simple-fpn.py',
    '../_base_/datasets/demo-shapes_instance.py',
    'mmdet::_base_/default_runtime.py'
]

image_size = 128
channels = 64
num_classes = 4
max_iters = 400

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=128,
            num_layers=4,
            num_heads=4,
            mlp_hidden_dim=512),
        img_size=image_size,
        patch_size=8,
        # 16x16 patches: windows of 8 with global blocks 1 and 3 keep the
        # ViTDet pattern at this size.
        window_size=8,
        global_block_indexes=(1, 3),
        drop_path_rate=0.0),
    # Strides 4, 8 and 16 from the stride-8 map, and P6 at 32.
    neck=dict(
        in_channels=128,
        out_channels=channels,
        scale_factors=(2.0, 1.0, 0.5),
        num_outs=4),
    rpn_head=dict(
        in_channels=channels,
        feat_channels=channels,
        num_convs=1,
        # Octave-spaced square anchors (16 to 181 px): the shapes' boxes are
        # 20-64 px and nearly square.
        anchor_generator=dict(
            scales=[4, 5.66], ratios=[1.0], strides=[4, 8, 16, 32])),
    roi_head=dict(
        # torchvision's RoIAlign: the same op (aligned=True), a faster CPU
        # forward than mmcv's.
        bbox_roi_extractor=dict(
            roi_layer=dict(use_torchvision=True),
            out_channels=channels,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=[
            dict(
                type='Shared2FCBBoxHead',
                in_channels=channels,
                fc_out_channels=256,
                roi_feat_size=7,
                num_classes=num_classes,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0., 0., 0., 0.],
                    target_stds=stds),
                reg_class_agnostic=True,
                loss_cls=dict(
                    type='CrossEntropyLoss', use_sigmoid=False,
                    loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                         [1 / 30, 1 / 30, 1 / 15, 1 / 15])
        ],
        # 7x7 mask features and 14x14 masks: a quarter of the usual mask
        # head cost, still finer than the 20-64 px shapes need.
        mask_roi_extractor=dict(
            roi_layer=dict(output_size=7, use_torchvision=True),
            out_channels=channels,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            num_convs=2,
            roi_feat_size=7,
            in_channels=channels,
            conv_out_channels=channels,
            num_classes=num_classes,
            norm_cfg=None)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=500, max_per_img=100),
        # The base's detectron2 cascade with 32 RoIs per image in stage 1
        # (stages 2-3 train on their refinements) and 14 x 14 masks.
        rcnn=[
            dict(
                _base_.model.train_cfg.rcnn[0],
                sampler=dict(_base_.model.train_cfg.rcnn[0].sampler, num=32),
                mask_size=14),
            _base_.model.train_cfg.rcnn[1],
            _base_.model.train_cfg.rcnn[2],
        ]),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999),
                   weight_decay=0.05),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters,
         eta_min_ratio=0.01)
]

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    # Skip unreadable training files (logged, counted, summarised; stops
    # past the limits); check the val/test files first (docs/bad_data.md).
    unreadable_data=dict(type='eva_mm.UnreadableDataHook'),
    logger=dict(type='LoggerHook', interval=20),
    # Every 100 iterations, so that a killed demo resumes (run_demo.py
    # passes --resume) instead of starting over.
    checkpoint=dict(type='CheckpointHook', by_epoch=False,
                    interval=100, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=20)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
