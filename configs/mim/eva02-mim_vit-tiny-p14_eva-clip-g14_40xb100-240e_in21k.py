# EVA-02-Ti MIM on IN-21K: eva02_Ti_pt_in21k_p14 (EVA-02/asuka/README.md,
# "Pre-train eva02_Ti_pt_in21k_p14 on IN-21K using 5 nodes x 8 gpus"). The
# README's B command (dpr=0.0, inherited) with the Ti student, batch, lr and
# epochs.
_base_ = ['./eva02-mim_vit-base-p14_eva-clip-g14_32xb64-150e_in21k.py']

# README: batch_size=100 per GPU x 8 GPUs x 5 nodes x update_freq 1 = 4000.
train_dataloader = dict(batch_size=100)
auto_scale_lr = dict(base_batch_size=4000)
model = dict(backbone=dict(arch='eva02-tiny'), head=dict(in_channels=192))
base_lr = 3e-3  # README: lr=3e-3 for Ti and S
optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-6 / base_lr),
    _base_.param_scheduler[1],
]
train_cfg = dict(max_epochs=240)  # README: epochs=240 for Ti and S
