# The schedule shape of the EVA recipes (MIM pre-training, image and video
# fine-tuning; the official timm/BEiT-style schedulers): a linear warm-up
# from epoch 0, then a cosine decay, both counted in epochs and stepped
# every iteration. Each recipe fills in its numbers, e.g.
#   dict(_base_.param_scheduler[0], start_factor=..., end=warmup_epochs)
#   dict(_base_.param_scheduler[1], eta_min=..., begin=warmup_epochs,
#        end=max_epochs, T_max=max_epochs - warmup_epochs)
param_scheduler = [
    dict(type='LinearLR', by_epoch=True, begin=0, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, convert_to_iter_based=True),
]
