# EVA-02-B IN-1K fine-tuning at 448 px from the IN-21K intermediate
# fine-tuned model: eva02_B_pt_in21k_medft_in21k_ft_in1k_p14, 88.6 top-1
# (EVA-02/asuka/README.md model card). The EVA-02-L recipe with the numbers
# of README.md "Fine-tune IN-21K-tuned eva02_B_pt_in21k_medft_in21k_p14 on
# IN-1K" (same dpr 0.15, smoothing 0.2, wmep 2, EMA, 448 px).
_base_ = ['eva02-l-p14_mim-in21k-pre_in1k-448px.py']

pretrained = 'work_dirs/eva02-b-p14_mim-pre_in21k-448px/epoch_40.pth'
model = dict(
    backbone=dict(arch='eva02-base', init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=768))
# README: batch_size=64 per GPU x 8 GPUs x 1 node x update_freq 1 = 512.
train_dataloader = dict(batch_size=64)
# README: lr=5e-5, lrd=0.8.
optim_wrapper = dict(
    optimizer=dict(lr=5e-5), paramwise_cfg=dict(layer_decay_rate=0.8))
train_cfg = dict(max_epochs=15)  # README: ep=15 (wmep=2 as L)
