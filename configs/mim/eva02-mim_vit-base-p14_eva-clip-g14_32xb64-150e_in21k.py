# EVA-02-B MIM on IN-21K: eva02_B_pt_in21k_p14 (EVA-02/asuka/README.md,
# "Pre-train eva02_B_pt_in21k_p14 on IN-21K using 4 nodes x 8 gpus").
_base_ = ['./_base_/eva02-mim_eva-clip-g14_recipe.py']

# README: batch_size=64 per GPU x 8 GPUs x 4 nodes x update_freq 1 = 2048.
train_dataloader = dict(batch_size=64)
auto_scale_lr = dict(base_batch_size=2048)
model = dict(
    backbone=dict(arch='eva02-base', drop_path_rate=0.0),  # README: dpr=0.0
    head=dict(in_channels=768))
