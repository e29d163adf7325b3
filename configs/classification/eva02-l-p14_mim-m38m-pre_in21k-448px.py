# EVA-02-L IN-21K intermediate fine-tuning at 448 px of the Merged-38M MIM
# model eva02_L_pt_m38m_p14: eva02_L_pt_m38m_medft_in21k_p14, the start of
# the 90.0 top-1 IN-1K model (EVA-02/asuka/README.md model card; its IN-1K
# stage is eva02-l-p14_mim-in21k-pre_in1k-448px.py with this run's
# checkpoint). The IN-21K-MIM recipe with the numbers of README.md
# "Fine-tune MIM pre-trained eva02_L_pt_m38m_p14 on IN-21K".
_base_ = ['eva02-l-p14_mim-pre_in21k-448px.py']

pretrained = 'checkpoints/eva02_L_pt_m38m_p14.pth'
model = dict(backbone=dict(init_cfg=dict(checkpoint=pretrained)))
# README: batch_size=16 per GPU x 8 GPUs x 8 nodes x update_freq 2 = 2048.
optim_wrapper = dict(
    optimizer=dict(lr=3e-4),  # README: lr=3e-4 (lrd=0.75 as inherited)
    accumulative_counts=2)
auto_scale_lr = dict(base_batch_size=1024)  # GPUs x per GPU (mmengine)
train_cfg = dict(max_epochs=30)  # README: ep=30
