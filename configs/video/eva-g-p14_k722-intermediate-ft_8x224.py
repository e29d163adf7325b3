# EVA-01 video stage 1: Kinetics-722 intermediate fine-tuning of the MIM
# pre-trained image EVA-g/14 (arXiv:2211.07636, official EVA-01/video
# README "Kinetics-722 intermediate fine-tune"). K-722 is the union of the
# K-400/600/700 training sets (0.63M videos, 722 classes) with validation
# leaks and duplicates removed; list files as in the official data list.
# Numbers from EVA-01/video/configs/kinetics722_intermediate_ft.yaml, the
# defaults of EVA-01/video/utils/config.py it leaves unset, and the run's
# log EVA-01/logs/video/ft_k722_log.txt: 8 frames at 224, lr 8e-6, 40
# epochs with 5 of warm-up from 0, cosine down to lr / 100 (LR_MIN 0 means
# lr / 100, utils/optimizer.py:155-162), no layer decay, drop path 0.3,
# betas (0.9, 0.98), weight decay 0.05, label smoothing 0.1, Mixup 0.8 and
# CutMix 1.0 (one of the two per batch, MIXUP_SWITCH_PROB 0.5). Global
# batch 256 = 128 GPUs x 2 clips x 1 accumulation step (the log: 2458
# iterations per epoch over the ~630k K-722 training videos).
_base_ = [
    '_base_/models/eva-g-p14_video.py',
    '_base_/datasets/kinetics_16x224.py',
    '_base_/schedules/eva-video_adamw.py',
    '../_base_/schedules/warmup-cosine_by-epoch.py',
    'mmaction::_base_/default_runtime.py',
]
custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)

# The image EVA-g/14 (official eva_psz14.pt converted with
# tools/model_converters/convert_eva.py, or an export of configs/mim):
# loading inflates the patch kernel and tiles the position embedding over
# the 8 frames.
pretrained = 'checkpoints/eva_psz14_eva-mm.pth'
clip_len = 8
num_classes = 722
model = dict(
    backbone=dict(
        num_frames=clip_len,
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    cls_head=dict(num_classes=num_classes),
    data_preprocessor=dict(
        # Mixup (alpha 0.8) or CutMix (alpha 1.0) on every batch, each with
        # probability 0.5 (EVA-01/video/main.py:109-116,
        # datasets/blending.py:154-218); the head's label smoothing 0.1
        # applies to the mixed labels as the official one-hot smoothing does.
        blending=dict(
            type='RandomBatchAugment',
            augments=[
                dict(type='MixupBlending', alpha=0.8,
                     num_classes=num_classes),
                dict(type='CutmixBlending', alpha=1.0,
                     num_classes=num_classes),
            ],
            probs=[0.5, 0.5])))

data_root = 'data'
# The three inherited pipelines with 8-frame TSN sampling.
train_pipeline, val_pipeline, test_pipeline = (
    [
        dict(t, clip_len=clip_len) if t['type'] == 'eva_mm.TSNSample' else t
        for t in pipeline
    ] for pipeline in (_base_.train_pipeline, _base_.val_pipeline,
                       _base_.test_pipeline))
# TRAIN.BATCH_SIZE 2 per GPU, ACCUMULATION_STEPS 1, on 128 GPUs.
train_dataloader = dict(
    batch_size=2,
    dataset=dict(
        ann_file='data/k722_train.txt',
        data_prefix=dict(video=data_root),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        ann_file='data/k722_val.txt',
        data_prefix=dict(video=data_root),
        pipeline=val_pipeline))
test_dataloader = dict(
    dataset=dict(
        ann_file='data/k722_val.txt',
        data_prefix=dict(video=data_root),
        pipeline=test_pipeline))

lr = 8e-6
optim_wrapper = dict(optimizer=dict(lr=lr), accumulative_counts=1)
max_epochs = 40
warmup_epochs = 5
# timm's CosineLRScheduler as the official code sets it up: per iteration, a
# linear warm-up from WARMUP_START_LR 0 to lr over 5 epochs, then a cosine
# from lr to lr / 100 over the remaining 35 (utils/optimizer.py:150-162).
# mmengine's LinearLR is multiplicative and cannot start at exactly 0 (a
# division by zero on its second step); its start factor 1e-9 is 0 to
# within 1e-9 lr. It reaches lr one iteration before timm does (it spans
# end - begin - 1 iterations): at most lr / (warm-up iterations) apart.
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-9, end=warmup_epochs),
    dict(_base_.param_scheduler[1], eta_min_ratio=0.01, begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(
    # Skip unreadable training files (logged, counted, summarised; stops
    # past the limits); check the val/test files first (docs/bad_data.md).
    unreadable_data=dict(type='eva_mm.UnreadableDataHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
