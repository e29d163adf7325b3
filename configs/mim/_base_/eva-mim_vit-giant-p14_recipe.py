# EVA-01 MIM pre-training recipe, ViT-g/14 student against CLIP ViT-L/14,
# for mmengine's plain Runner. Numbers are from the EVA paper's pre-training
# settings (arXiv:2211.07636, Appendix, "pre-training setting" table) and the
# official EVA-01 code (baaivision/EVA, EVA-01/eva/run_eva_pretraining.py).
_base_ = ['../../_base_/schedules/warmup-cosine_by-epoch.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)

# ------------------------------------------------------------------ data
# Paper: 29.6M unlabelled images (IN-21K, CC12M, CC3M, Object365, COCO,
# ADE20K); any image folder works here (labels off), or a ConcatDataset.
data_root = 'data/mim_images'
img_size = 224  # paper: 224 pre-training resolution
patch_size = 14  # paper: ViT-g/14; the student and teacher grids must match
grid = img_size // patch_size  # 16x16 patches
# CLIP's normalisation, shared by student and teacher (same crop for both).
clip_mean = [0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255]
clip_std = [0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    # Official code: RandomResizedCrop(224, scale=(0.2, 1.0), bicubic) with
    # torchvision's default ratio (3/4, 4/3), then a horizontal flip.
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.2, 1.0),
        aspect_ratio_range=(3. / 4., 4. / 3.),
        interpolation='bicubic',
        backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # EVA-01's block-wise masking (EVA-01/eva/masking_generator.py: blocks
    # placed with inclusive bounds, stops when a round adds nothing), paper:
    # 40% of the patches (at most 105 of 256), official run_eva_pretraining
    # defaults: min 16 patches per block, aspect in [0.3, 1/0.3].
    dict(
        type='eva_mm.EVABlockMaskGenerator',
        input_size=grid,
        num_masking_patches=105,
        min_num_patches=16,
        max_num_patches=None,
        min_aspect=0.3),
    dict(type='PackInputs')
]
# Official global batch 4096 = 16 nodes x 8 GPUs x 32 per GPU x 1
# accumulation step (EVA-01/eva/README.md, "Pre-train EVA": total_bsz =
# 16*8*32, batch_size=32, update_freq=1).
batch_per_gpu = 32
train_dataloader = dict(
    batch_size=batch_per_gpu,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        with_label=False,
        pipeline=train_pipeline))

# ------------------------------------------------------------------ model
model = dict(
    type='eva_mm.EVAMIM',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=clip_mean,
        std=clip_std,
        to_rgb=True),
    backbone=dict(
        type='eva_mm.EVAViT',
        arch='giant',  # 40 layers, width 1408, MLP 6144 (paper, Table 1)
        img_size=img_size,
        patch_size=patch_size,
        out_type='raw',
        with_mask_token=True,
        drop_path_rate=0.1,  # paper: stochastic depth 0.1
        fp32_norm=True),
    # Paper: targets are 768-d CLIP ViT-L/14 (OpenAI) image features.
    head=dict(type='eva_mm.EVAMIMHead', in_channels=1408, out_channels=768),
    target_generator=dict(
        type='eva_mm.OpenCLIPTeacher',
        model_name='ViT-L-14',
        # An open_clip tag (downloaded to cache_dir) or a local file; set a
        # local path on machines without internet access.
        pretrained='openai',
        quick_gelu=True,  # OpenAI's CLIP weights were trained with QuickGELU
        image_size=img_size),
    # Official init (EVA-01/eva/modeling_pretrain.py:24-25, 75-114, 172):
    # Linear, patch-embedding Conv2d, lm_head, cls/mask tokens and position
    # embedding ~ N(0, init_std) truncated at +-init_std; 0.015 for the
    # giant (eva_g_patch14_224), 0.02 (the class default) otherwise.
    init_std=0.015)

# ------------------------------------------------------------------ schedule
max_epochs = 150  # paper: 150 epochs
warmup_epochs = 2  # official code: 2 warm-up epochs
base_lr = 1e-3  # paper: peak lr 1e-3 at batch 4096
optim_wrapper = dict(
    type='OptimWrapper',
    # Paper: AdamW, betas (0.9, 0.98), eps 1e-6, weight decay 0.05.
    optimizer=dict(
        type='AdamW',
        lr=base_lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        weight_decay=0.05),
    # Rate 1.0 means no layer decay (pre-training). No weight decay on 1-D
    # params (norms, q/v biases), biases, pos_embed and cls_token; mask_token
    # IS decayed: the official skip list is the student's no_weight_decay()
    # = {'pos_embed', 'cls_token'} (EVA-01/eva/modeling_pretrain.py:116-118,
    # optim_factory.py:69).
    constructor='eva_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=1.0, no_decay_names=('pos_embed', 'cls_token')),
    clip_grad=dict(max_norm=3.0))  # paper: gradient clipping 3.0
param_scheduler = [
    # Linear warm-up from 1e-6 (start_factor = 1e-6 / 1e-3), per iteration.
    dict(_base_.param_scheduler[0], start_factor=1e-6 / base_lr,
         end=warmup_epochs),
    # Cosine decay to 1e-5 (official min_lr), per iteration.
    dict(_base_.param_scheduler[1], eta_min=1e-5, begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
# The lr above is for the official global batch (16 x 8 x 32 x 1 = 4096);
# --auto-scale-lr scales it linearly to the batch actually used. Left off by
# default so a smaller machine reproduces the recipe's numbers knowingly.
auto_scale_lr = dict(base_batch_size=4096, enable=False)

# ------------------------------------------------------------------ runtime
default_hooks = dict(
    # Skip unreadable training files (logged, counted, summarised; stops
    # past the limits); check the val/test files first (docs/bad_data.md).
    unreadable_data=dict(type='eva_mm.UnreadableDataHook'),
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))
# Stop on a NaN/inf loss naming the iteration and the last good checkpoint;
# reload=True instead reloads it and goes on, as the official code does.
custom_hooks = [dict(type='eva_mm.NonFiniteLossHook', reload=False)]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
log_processor = dict(window_size=10)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True)
