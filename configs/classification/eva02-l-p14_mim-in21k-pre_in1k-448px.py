# EVA-02-L IN-1K fine-tuning at 448 px from the IN-21K intermediate
# fine-tuned model: eva02_L_pt_in21k_medft_in21k_ft_in1k_p14, 89.9 top-1
# (EVA-02/asuka/README.md model card; 90.0 from the Merged-38M MIM model
# with the same command). Numbers from the official command, README.md
# "Fine-tune IN-21K-tuned eva02_L_pt_in21k_medft_in21k_p14 on IN-1K", or,
# where it passes none, the defaults of EVA-02/asuka/run_class_finetuning.py.
# The inherited EVA-01 IN-1K recipe has the same shape: AdamW betas
# (0.9, 0.999) and eps 1e-8 (defaults, :84-87), no gradient clipping (:88),
# weight decay 0.05, warmup_lr 0 and min_lr 0, cosine, EMA 0.9999 evaluated
# instead of the raw weights (--model_ema --model_ema_eval, default decay
# :77), no Mixup/CutMix, reprob 0, RandAugment rand-m9-mstd0.5-inc1, crop
# scale 0.08-1, test crop_pct 1.0 (short edge to the size, center crop).
_base_ = ['eva-g-p14_mim-in21k-pre_in1k-336px.py']

img_size = 448  # README: sz=448
# The stage-1 result of eva02-l-p14_mim-pre_in21k-448px.py (its backbone,
# prefix 'backbone.'; the 21841-class head is left out). For the official
# eva02_L_pt_in21k_medft_in21k_p14.pt, convert it with
#   python tools/model_converters/convert_eva.py --src-format official-eva02 \
#       eva02_L_pt_in21k_medft_in21k_p14.pt checkpoints/eva02_L_in21k.pth
# and set checkpoint to that file and prefix=None.
pretrained = 'work_dirs/eva02-l-p14_mim-pre_in21k-448px/epoch_20.pth'
model = dict(
    backbone=dict(
        # EVA-02-L: 24 blocks, width 1024, SwiGLU with sub-LN, RoPE, patch
        # 14. As the official fine-tuning model (modeling_finetune.py:476,
        # 543-544, 557-558, 597-598, 616-621; run_class_finetuning.py:
        # 155-158) and the inherited EVA-01 one: mean pooling of the patch
        # tokens, fc_norm, no final norm, a 0.001-scaled linear head, the
        # patch embedding frozen (stop_grad_conv1=True detaches it).
        arch='eva02-large',
        img_size=img_size,
        drop_path_rate=0.15,  # README: dpr=0.15
        # No --use_checkpoint in the EVA-02 commands (no effect on the
        # numbers; set it for memory).
        with_cp=False,
        init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=1024, loss=dict(label_smooth_val=0.2)))  # 0.2

# The inherited 336 px pipelines at 448 px.
train_pipeline = [
    dict(t, scale=img_size) if t['type'] == 'RandomResizedCrop' else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, scale=img_size) if t['type'] == 'ResizeEdge' else
    dict(t, crop_size=img_size) if t['type'] == 'CenterCrop' else t
    for t in _base_.test_pipeline
]
# README: batch_size=16 per GPU x 8 GPUs x 4 nodes x update_freq 1 = 512.
train_dataloader = dict(batch_size=16, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
auto_scale_lr = dict(base_batch_size=512)

# README: lr=2e-5, lrd=0.85.
optim_wrapper = dict(
    optimizer=dict(lr=2e-5), paramwise_cfg=dict(layer_decay_rate=0.85))
# README: ep=20, wmep=2: the inherited 2 warm-up epochs from 0, then the
# inherited cosine to 0 until the end of training (without end and T_max,
# mmengine's Runner takes them from train_cfg.max_epochs).
max_epochs = 20
param_scheduler = [
    _base_.param_scheduler[0],
    {
        key: value
        for key, value in _base_.param_scheduler[1].items()
        if key not in ('end', 'T_max')
    },
]
train_cfg = dict(max_epochs=max_epochs)
