# EVA-02-B IN-21K intermediate fine-tuning at 448 px of the MIM model
# eva02_B_pt_in21k_p14: eva02_B_pt_in21k_medft_in21k_p14 (EVA-02/asuka/
# README.md model card). The EVA-02-L recipe with the numbers of README.md
# "Fine-tune MIM pre-trained eva02_B_pt_in21k_p14 on IN-21K" (same wmep 1,
# smoothing 0.1, crop scale 0.2-1, 448 px).
_base_ = ['eva02-l-p14_mim-pre_in21k-448px.py']

pretrained = 'checkpoints/eva02_B_pt_in21k_p14.pth'
model = dict(
    backbone=dict(
        arch='eva02-base',
        drop_path_rate=0.1,  # README: dpr=0.1
        init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=768))
# README: batch_size=64 per GPU x 8 GPUs x 4 nodes x update_freq 1 = 2048.
train_dataloader = dict(batch_size=64)
auto_scale_lr = dict(base_batch_size=2048)
# README: lr=3e-4, lrd=0.7.
optim_wrapper = dict(
    optimizer=dict(lr=3e-4), paramwise_cfg=dict(layer_decay_rate=0.7))
train_cfg = dict(max_epochs=40)  # README: ep=40
