# EVA-02-B IN-1K fine-tuning at 448 px straight from the MIM model
# eva02_B_pt_in21k_p14 (no IN-21K stage): eva02_B_pt_in21k_ft_in1k_p14,
# 88.3 top-1 (EVA-02/asuka/README.md model card). The EVA-02-L recipe
# (30 epochs, 3 of warm-up, EMA evaluated, 448 px) with the numbers of
# README.md "Fine-tune MIM pre-trained eva02_B_pt_in21k_p14 on IN-1K".
_base_ = ['eva02-l-p14_mim-pre_in1k-448px.py']

pretrained = 'checkpoints/eva02_B_pt_in21k_p14.pth'
model = dict(
    backbone=dict(
        arch='eva02-base',
        drop_path_rate=0.1,  # README: dpr=0.1
        init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=768, loss=dict(label_smooth_val=0.1)))  # 0.1
# README: batch_size=32 per GPU x 8 GPUs x 4 nodes x update_freq 1 = 1024.
train_dataloader = dict(batch_size=32)
auto_scale_lr = dict(base_batch_size=1024)
optim_wrapper = dict(
    optimizer=dict(lr=1e-4),  # README: lr=1e-4
    paramwise_cfg=dict(layer_decay_rate=0.7),  # README: lrd=0.7
    accumulative_counts=1)
