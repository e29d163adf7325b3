# EVA-01 stage 2: ImageNet-1K fine-tuning at 336 px, from the IN-21K
# intermediate fine-tuned model, 10 epochs, EMA of the weights. The recipe
# shared by the training config eva-g-p14_mim-in21k-pre_in1k-336px.py (and
# its 560 px variant) and the evaluation base eva-g-p14_in1k-336px_test.py.
# Every number is from the official command in EVA-01/eva/README.md
# ("Fine-tuning EVA on ImageNet-1K with ImageNet-21K intermediate
# fine-tuned checkpoint") unless the comment says otherwise.
_base_ = [
    './models/eva-g-p14_linear-cls.py',
    './datasets/imagenet_eva-336px.py',
    './schedules/eva-g-p14_adamw-layer-decay.py',
    '../../_base_/schedules/warmup-cosine_by-epoch.py',
    'mmpretrain::_base_/default_runtime.py',
]

# The stage-1 result of eva-g-p14_mim-pre_in21k-224px.py: its backbone is
# loaded (prefix 'backbone.'), the 224 px position embedding is resized to
# the 24x24 grid of 336 px, and the 21841-class head is left out (the head
# starts fresh, as the official script drops a head of another size). For
# the official eva_21k_224px_psz14.pt, convert it with
#   python tools/model_converters/convert_eva.py --src-format official \
#       eva_21k_224px_psz14.pt checkpoints/eva_21k_224px_psz14_eva-mm.pth
# and set checkpoint to that file and prefix=None.
pretrained = 'work_dirs/eva-g-p14_mim-pre_in21k-224px/epoch_60.pth'

model = dict(
    backbone=dict(
        img_size=336,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    # --smoothing 0.3; --mixup 0.0 --cutmix 0.0: no batch augments.
    head=dict(num_classes=1000, loss=dict(label_smooth_val=0.3)))

# AdamW (--weight_decay 0.05: the schedule base), --lr 3e-5 for the total
# batch 512, --layer_decay 0.95. No --opt_betas / --opt_eps in this command:
# the script defaults (AdamW's (0.9, 0.999) and 1e-8 in the BEiT script; not
# re-checked in EVA-01's copy).
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, betas=(0.9, 0.999), eps=1e-8),
    paramwise_cfg=dict(layer_decay_rate=0.95))

# --epochs 10 --warmup_epochs 2, --warmup_lr 0.0 --min_lr 0.0, cosine.
# LinearLR cannot start at exactly 0; 1e-8 of the peak is 0 in practice.
max_epochs = 10
warmup_epochs = 2
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-8, end=warmup_epochs),
    dict(_base_.param_scheduler[1], eta_min=0., begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# The official global batch (4 nodes x 8 GPUs x 16 x 1 accumulation; see
# the IN-21K config for auto_scale_lr).
auto_scale_lr = dict(base_batch_size=512)

# --model_ema --model_ema_eval: EMA of the weights, evaluated instead of the
# raw weights. No --model_ema_decay: the BEiT script default 0.9999, i.e.
# mmengine momentum 1 - 0.9999 (not re-checked in EVA-01's copy).
custom_hooks = [
    dict(
        type='EMAHook',
        momentum=1e-4,
        evaluate_on_ema=True,
        priority='ABOVE_NORMAL')
]
default_hooks = dict(
    # Skip unreadable training files (logged, counted, summarised; stops
    # past the limits); check the val/test files first (docs/bad_data.md).
    unreadable_data=dict(type='eva_mm.UnreadableDataHook'),
    checkpoint=dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=2,
        save_best='auto'))
