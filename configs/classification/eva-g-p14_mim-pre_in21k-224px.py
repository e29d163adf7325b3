# EVA-01 stage 1: ImageNet-21K intermediate fine-tuning of the MIM
# pre-trained EVA-g/14 at 224 px for 60 epochs (arXiv:2211.07636).
# Every number is from the official command in EVA-01/eva/README.md
# ("Intermediate Fine-tune MIM pre-trained EVA on ImageNet-21K") unless the
# comment says otherwise.
_base_ = [
    '_base_/models/eva-g-p14_linear-cls.py',
    '_base_/datasets/imagenet21k_eva-224px.py',
    '_base_/schedules/eva-g-p14_adamw-layer-decay.py',
    '../_base_/schedules/warmup-cosine_by-epoch.py',
    'mmpretrain::_base_/default_runtime.py',
]

# The MIM pre-trained weights: the official eva_psz14.pt converted with
#   python tools/model_converters/convert_eva.py --src-format official \
#       eva_psz14.pt checkpoints/eva_psz14_eva-mm.pth
# or eva_mm's own MIM pre-training (configs/mim) exported with
#   python tools/model_converters/export_mim.py \
#       work_dirs/<mim run>/epoch_150.pth checkpoints/eva_psz14_eva-mm.pth
# The MIM mask_token, final norm and head are not loaded; fc_norm starts
# fresh.
pretrained = 'checkpoints/eva_psz14_eva-mm.pth'

model = dict(
    backbone=dict(
        img_size=224,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    head=dict(
        num_classes=21841,
        # No --smoothing in the command: the script default 0.1 (BEiT's
        # run_class_finetuning.py default, not re-checked in EVA-01's copy).
        loss=dict(label_smooth_val=0.1)),
    # --mixup 0.0 --cutmix 1.0: CutMix on every batch, no Mixup.
    train_cfg=dict(augments=[dict(type='CutMix', alpha=1.0)]))

# AdamW (--weight_decay 0.05: the schedule base), --lr 1e-4 for the total
# batch 4096, --opt_betas 0.9 0.98, --opt_eps 1e-6, --layer_decay 0.85. The
# official run uses DeepSpeed fp16; run tools/train.py with --amp for mixed
# precision.
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, betas=(0.9, 0.98), eps=1e-6),
    paramwise_cfg=dict(layer_decay_rate=0.85))

# --epochs 60 --warmup_epochs 15, then cosine decay. Warm-up start and final
# lr are not in the command: the BEiT script defaults --warmup_lr 1e-6 and
# --min_lr 1e-6 (both scaled by each layer's lr scale, hence ratios).
max_epochs = 60
warmup_epochs = 15
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-6 / 1e-4,
         end=warmup_epochs),
    dict(_base_.param_scheduler[1], eta_min_ratio=1e-6 / 1e-4,
         begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs)
# The official global batch (8 nodes x 8 GPUs x 64 x 1 accumulation);
# --cfg-options auto_scale_lr.enable=True makes mmengine rescale every
# group's lr linearly to the batch actually used.
auto_scale_lr = dict(base_batch_size=4096)
default_hooks = dict(
    # Skip unreadable training files (logged, counted, summarised; stops
    # past the limits); check the val/test files first (docs/bad_data.md).
    unreadable_data=dict(type='eva_mm.UnreadableDataHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
