# EVA-02-L IN-21K intermediate fine-tuning at 448 px of the MIM model
# eva02_L_pt_in21k_p14: eva02_L_pt_in21k_medft_in21k_p14 (EVA-02/asuka/
# README.md model card). Numbers from the official command, README.md
# "Fine-tune MIM pre-trained eva02_L_pt_in21k_p14 on IN-21K", or, where it
# passes none, the defaults of EVA-02/asuka/run_class_finetuning.py. The
# inherited EVA-01 IN-21K recipe gives the rest: IN-21K image folder (21841
# classes), no evaluation (--disable_eval_during_finetuning), AdamW with
# weight decay 0.05 and layer decay, RandAugment rand-m9-mstd0.5-inc1,
# smoothing 0.1, reprob 0, no EMA.
_base_ = ['eva-g-p14_mim-pre_in21k-224px.py']

img_size = 448  # README: sz=448
# The official MIM weights converted with
#   python tools/model_converters/convert_eva.py --src-format official-eva02 \
#       eva02_L_pt_in21k_p14.pt checkpoints/eva02_L_pt_in21k_p14.pth
# or eva_mm's own EVA-02 MIM run (configs/mim/eva02-mim_vit-large-*)
# exported with tools/model_converters/export_mim.py.
pretrained = 'checkpoints/eva02_L_pt_in21k_p14.pth'
model = dict(
    backbone=dict(
        # EVA-02-L; pooling, fc_norm, head init and frozen patch embedding
        # as the official model (see eva02-l-p14_mim-in21k-pre_in1k-448px.py)
        arch='eva02-large',
        img_size=img_size,
        drop_path_rate=0.15,  # README: dpr=0.15
        with_cp=False,  # no --use_checkpoint in the EVA-02 commands
        init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=1024),  # smoothing=0.1 as inherited
    train_cfg=None)  # README: mixup=0.0, cutmix=0.0

# The inherited pipeline at 448 px, crop scale 0.2-1 (README: scale_low=0.2).
train_pipeline = [
    dict(t, scale=img_size, crop_ratio_range=(0.2, 1.0))
    if t['type'] == 'RandomResizedCrop' else t
    for t in _base_.train_pipeline
]
# README: batch_size=16 per GPU x 8 GPUs x 8 nodes x update_freq 1 = 1024.
train_dataloader = dict(batch_size=16, dataset=dict(pipeline=train_pipeline))
auto_scale_lr = dict(base_batch_size=1024)

# README: lr=2e-4, lrd=0.75; no --opt_betas / --opt_eps: (0.9, 0.999) and
# 1e-8 (run_class_finetuning.py:84-87).
optim_wrapper = dict(
    optimizer=dict(lr=2e-4, betas=(0.9, 0.999), eps=1e-8),
    paramwise_cfg=dict(layer_decay_rate=0.75))
# README: ep=20, wmep=1, warmup_lr=0.0, min_lr=0.0: the inherited warm-up
# and cosine with those numbers, the cosine until the end of training
# (without end and T_max, mmengine's Runner takes them from
# train_cfg.max_epochs). LinearLR cannot start at exactly 0; 1e-8 of the
# peak is 0 in practice.
max_epochs = 20
warmup_epochs = 1
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-8, end=warmup_epochs),
    {
        key: value
        for key, value in _base_.param_scheduler[1].items()
        if key not in ('end', 'T_max')
    } | dict(eta_min_ratio=0., begin=warmup_epochs),
]
train_cfg = dict(max_epochs=max_epochs)
