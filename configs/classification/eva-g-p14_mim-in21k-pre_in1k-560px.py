# EVA-01 stage 2 at 560 px: the paper's 89.7 top-1 (arXiv:2211.07636;
# official checkpoint eva_21k_1k_560px_psz14_ema_89p7.pt). Same
# recipe as the 336 px config except the size and the length: the official
# README gives "ep=10 # or 15" and lists 15 IN-1K epochs for the 560 px
# model in its model card, so 15 here (the issue text says 10).
_base_ = ['_base_/eva-g-p14_in1k-336px_finetune.py']

img_size = 560
model = dict(backbone=dict(img_size=img_size))

# The 336 px pipelines with the crop and resize sizes set to 560.
train_pipeline = [
    dict(t, scale=img_size) if t['type'] == 'RandomResizedCrop' else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, scale=img_size) if t['type'] == 'ResizeEdge' else
    dict(t, crop_size=img_size) if t['type'] == 'CenterCrop' else t
    for t in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

# The same 2 warm-up epochs, then cosine decay to epoch 15.
max_epochs = 15
param_scheduler = [
    _base_.param_scheduler[0],
    dict(
        _base_.param_scheduler[1],
        end=max_epochs,
        T_max=max_epochs - _base_.warmup_epochs),
]
train_cfg = dict(max_epochs=max_epochs)
