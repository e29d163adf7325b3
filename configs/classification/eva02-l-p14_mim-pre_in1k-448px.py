# EVA-02-L IN-1K fine-tuning at 448 px straight from the MIM model
# eva02_L_pt_in21k_p14 (no IN-21K stage): eva02_L_pt_in21k_ft_in1k_p14,
# 89.6 top-1 (EVA-02/asuka/README.md model card; the same command on
# eva02_L_pt_m38m_p14 gives 89.6 too). The IN-1K recipe of
# eva02-l-p14_mim-in21k-pre_in1k-448px.py with the numbers of README.md
# "Fine-tune MIM pre-trained eva02_L_pt_in21k_p14 on IN-1K" (EMA evaluated,
# smoothing 0.2, dpr 0.15, 448 px as there).
_base_ = ['eva02-l-p14_mim-in21k-pre_in1k-448px.py']

# The official MIM weights converted with
#   python tools/model_converters/convert_eva.py --src-format official-eva02 \
#       eva02_L_pt_in21k_p14.pt checkpoints/eva02_L_pt_in21k_p14.pth
# (a backbone checkpoint: no prefix), or an export of configs/mim.
pretrained = 'checkpoints/eva02_L_pt_in21k_p14.pth'
model = dict(
    backbone=dict(init_cfg=dict(checkpoint=pretrained, prefix=None)))
# README: batch_size=16 per GPU x 8 GPUs x 4 nodes x update_freq 2 = 1024;
# mmengine's auto_scale_lr counts GPUs x per GPU (512, inherited).
optim_wrapper = dict(
    optimizer=dict(lr=5e-5),  # README: lr=5e-5
    paramwise_cfg=dict(layer_decay_rate=0.8),  # README: lrd=0.8
    accumulative_counts=2)
# README: ep=30, wmep=3.
warmup_epochs = 3
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_epochs),
    dict(_base_.param_scheduler[1], begin=warmup_epochs),
]
train_cfg = dict(max_epochs=30)
