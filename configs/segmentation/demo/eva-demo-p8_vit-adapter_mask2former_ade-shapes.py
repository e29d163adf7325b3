# A CPU demo of the EVA semantic segmentation recipe: the ViT-Adapter +
# Mask2Former model of the paper configs, shrunk (a 4-block ViT of width 64
# at patch 8, a 32-channel head with 16 queries, 1 pixel-decoder layer and 2
# decoder layers), trained from scratch on the generated ADE20K-format shapes
# set (eva_mm.datasets.synthetic.generate_demo_ade: 96 px images, ADE20K's
# 150-class label space with shapes of the first 8 classes) with the paper's ADE20K
# pipeline at a 64 px crop, evaluated by sliding windows and, with
# tools/test.py --tta, multi-scale + flip.
#   python -c "from eva_mm.datasets.synthetic import generate_demo_ade; \
#       generate_demo_ade('data/demo_ade', num_classes=8)"
#   python tools/train.py configs/segmentation/demo/THIS_FILE.py
_base_ = [
    '../../_base_/models/mask2former_eva-vit-adapter.py',
    '../../_base_/datasets/ade20k_896.py',
    '../../_base_/schedules/eva-seg_adamw-layer-decay_poly.py',
    'mmseg::_base_/default_runtime.py',
]

crop_size = (64, 64)
channels = 32
embed_dims = 64
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=embed_dims,
            num_layers=4,
            num_heads=4,
            mlp_hidden_dim=128),
        img_size=crop_size,
        patch_size=8,
        drop_path_rate=0.,
        with_cp=False,
        conv_inplane=16,
        deform_num_heads=4,
        # One block per interaction.
        interaction_indexes=None,
        # One CPU process: plain BN.
        norm_cfg=dict(type='BN', requires_grad=True)),
    decode_head=dict(
        in_channels=[embed_dims] * 4,
        feat_channels=channels,
        out_channels=channels,
        # At most 3 shapes per image: 16 queries are plenty.
        num_queries=16,
        pixel_decoder=dict(
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=channels, num_heads=4),
                    ffn_cfg=dict(
                        embed_dims=channels, feedforward_channels=64))),
            positional_encoding=dict(num_feats=channels // 2)),
        positional_encoding=dict(num_feats=channels // 2),
        transformer_decoder=dict(
            num_layers=2,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=channels, num_heads=4),
                cross_attn_cfg=dict(embed_dims=channels, num_heads=4),
                ffn_cfg=dict(embed_dims=channels,
                             feedforward_channels=64))),
        # Points sampled per mask for the losses: a 64 px crop has 256
        # stride-4 mask pixels.
        train_cfg=dict(num_points=256)),
    # Windows of 64 with stride 32 over the 96 px images: 2 x 2 windows.
    test_cfg=dict(crop_size=crop_size, stride=(32, 32)))

data_root = 'data/demo_ade'
scale = (384, 96)  # the paper's (3584, 896) at the 96 px image size
train_pipeline = [
    dict(t, scale=scale) if t['type'] == 'RandomResize' else
    dict(t, crop_size=crop_size) if t['type'] == 'RandomCrop' else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, scale=scale) if t['type'] == 'Resize' else t
    for t in _base_.test_pipeline
]
tta_pipeline = [
    _base_.tta_pipeline[0],
    dict(
        _base_.tta_pipeline[1],
        transforms=[[
            dict(
                type='Resize',
                scale=(int(scale[0] * r), int(scale[1] * r)),
                keep_ratio=True) for r in (0.75, 1.0, 1.25)
        ]] + _base_.tta_pipeline[1]['transforms'][1:])
]
# The paper's padded multi-scale test at this size: views below 64 px are
# padded to 64 so that every window is a full one.
tta_model = dict(type='eva_mm.PadShortSideSegTTAModel', size=64, pad_val=0)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(lr=2e-3), paramwise_cfg=dict(layer_decay_rate=0.95))
max_iters = 200
warmup_iters = 5
# The paper configs' poly over all iterations with the warm-up on top (the
# schedule base's, ends + 1 as there), warming up from 1e-3.
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-3, end=warmup_iters + 1),
    dict(_base_.param_scheduler[1], end=max_iters + 1),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
