# CPU demo of EVA MIM: a tiny EVAViT student learns the patch features of a
# tiny open_clip ViT teacher (random weights, or pass a local CLIP file) on
# the generated demo shapes images, in a few minutes on 2 CPU cores:
#   python -c "from eva_mm.datasets.synthetic import generate_demo_shapes \
#       as g; g('data/demo_shapes')"
#   python tools/train.py configs/mim/eva-mim_demo-tiny-p8_clip-tiny_shapes.py
# Same recipe as the ViT-g config, scaled down: 64 px, patch 8 (8x8 grid),
# 40% masking (at most 26 of 64 patches, blocks of at least 4).
_base_ = ['./_base_/eva-mim_vit-giant-p14_recipe.py']

data_root = 'data/demo_shapes/train'
img_size = 64
patch_size = 8
grid = img_size // patch_size
# The recipe's pipeline at 64 px (the crop with mmpretrain's default aspect
# ratio range), masking at most 26 of the 64 patches in blocks of at least
# 4.
train_pipeline = [
    _base_.train_pipeline[0],  # LoadImageFromFile
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.2, 1.0),
        interpolation='bicubic',
        backend='pillow'),
    _base_.train_pipeline[2],  # RandomFlip
    dict(
        _base_.train_pipeline[3],  # eva_mm.EVABlockMaskGenerator
        input_size=grid,
        num_masking_patches=26,
        min_num_patches=4),
    _base_.train_pipeline[4],  # PackInputs
]
batch_per_gpu = 16
train_dataloader = dict(
    batch_size=batch_per_gpu,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))

model = dict(
    init_std=0.02,  # the official default for students smaller than giant
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=64,
            num_layers=4,
            num_heads=2,
            mlp_hidden_dim=256),
        img_size=img_size,
        patch_size=patch_size,
        drop_path_rate=0.),
    head=dict(in_channels=64, out_channels=32),
    target_generator=dict(
        _delete_=True,
        type='eva_mm.OpenCLIPTeacher',
        model_cfg=dict(
            embed_dim=32,
            vision_cfg=dict(
                image_size=img_size,
                layers=2,
                width=64,
                head_width=32,
                patch_size=patch_size)),
        pretrained=None))

max_iters = 300
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=False,
        begin=0,
        end=20),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters - 20,
        eta_min=1e-5,
        by_epoch=False,
        begin=20,
        end=max_iters)
]
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=100, max_keep_ckpts=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
log_processor = dict(window_size=1, by_epoch=False)
