# EVA-02-L MIM on IN-21K: eva02_L_pt_in21k_p14 (EVA-02/asuka/README.md,
# "Pre-train eva02_L_pt_in21k_p14 on IN-21K using 8 nodes x 8 gpus"). The
# README's B command with the L student and dpr: the same global batch 2048,
# lr 1.5e-3 and 150 epochs, inherited.
_base_ = ['./eva02-mim_vit-base-p14_eva-clip-g14_32xb64-150e_in21k.py']

# README: batch_size=32 per GPU x 8 GPUs x 8 nodes x update_freq 1 = 2048.
train_dataloader = dict(batch_size=32)
model = dict(
    backbone=dict(arch='eva02-large', drop_path_rate=0.1),  # README: dpr=0.1
    head=dict(in_channels=1024))
