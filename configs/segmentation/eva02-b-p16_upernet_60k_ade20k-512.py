# EVA-02-B UperNet on ADE20K, 512 x 512 crops: the official
# eva02_B_ade_seg_upernet_sz512 (EVA-02/seg/configs/eva02/upernet/
# upernet_eva02_base_12_512_slide_60k.py, "official" below; EVA-02/seg/
# README.md: 55.3 mIoU single-scale). From eva02_B_pt_in21k_p14to16.pt.
_base_ = ['./eva02-l-p16_upernet_80k_ade20k-512.py']

model = dict(
    backbone=dict(
        arch='eva02-base',  # embed_dim 768, depth 12, num_heads 12
        out_indices=(3, 5, 7, 11),  # out_indices=[3, 5, 7, 11]
        drop_path_rate=0.15),  # drop_path_rate=0.15
    neck=dict(embed_dim=768),
    # in_channels=[768] * 4, channels=768 (README: seg head dim 768).
    decode_head=dict(in_channels=[768] * 4, channels=768),
    auxiliary_head=dict(in_channels=768))

# lr=6e-5, layer_decay_rate=0.85 over 12 layers (official lines 63-70).
optim_wrapper = dict(
    optimizer=dict(lr=6e-5), paramwise_cfg=dict(layer_decay_rate=0.85))
max_iters = 60000  # schedule_60k.py
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=max_iters + 1)
]
train_cfg = dict(max_iters=max_iters)
# schedule_60k.py keeps 4 checkpoints.
default_hooks = dict(checkpoint=dict(max_keep_ckpts=4))
# "4 GPUs with 8 images per GPU" (official lines 78-79): batch 32.
train_dataloader = dict(batch_size=8)
auto_scale_lr = dict(base_batch_size=32)
