# AdamW with layer-wise lr decay as in the official EVA-01/video configs:
# TRAIN.BETAS (0.9, 0.98), TRAIN.EPS 1e-6, TRAIN.WEIGHT_DECAY 0.05. The
# stage configs set lr, layer decay, epochs and warm-up.
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW', lr=1e-6, betas=(0.9, 0.98), eps=1e-6,
        weight_decay=0.05),
    constructor='eva_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0),
    # Gradient clipping is not in the official configs.
    clip_grad=None)
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# The official global batch of every stage is 256 (GPUs x clips per GPU x
# accumulation steps, stated in each stage config). --cfg-options
# auto_scale_lr.enable=True rescales the lr linearly to the batch actually
# used. mmengine's auto_scale_lr counts GPUs x clips per GPU only, not
# accumulation, so base_batch_size is 256 / accumulative_counts: a stage
# with accumulation sets it accordingly, and the two change together.
auto_scale_lr = dict(enable=False, base_batch_size=256)
