# EVA-01's COCO fine-tuning schedule for the Cascade Mask R-CNN (official
# EVA-01 det config EVA-01/det/projects/ViTDet/configs/COCO/
# cascade_mask_rcnn_vitdet_eva_1536.py, on top of ViTDet's
# mask_rcnn_vitdet_b_100ep.py and detectron2's common/optim.py): AdamW with
# layer-wise lr decay, linear warm-up, two steps, mixed precision, batch 64.
# On top of mmdet's default runtime, whose hooks it sets for iterations.
_base_ = ['mmdet::_base_/default_runtime.py']

max_iters = 45000  # train.max_iter = 45000
warmup_iters = 500  # warmup_length = 500 / max_iter ("2ep 118k*2/64")

train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    # detectron2's common/train.py: eval_period = 5000.
    val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    # fp16 with dynamic loss scaling (train.amp.enabled = True, ViTDet).
    # mmengine's AmpOptimWrapper needs a GPU; on CPU use
    # --cfg-options optim_wrapper.type=OptimWrapper, or tools/train.py --amp
    # for bf16 autocast.
    type='AmpOptimWrapper',
    constructor='eva_mm.LayerDecayOptimWrapperConstructor',
    # lr_decay_rate=0.9 over num_layers=40 (get_vit_lr_decay_rate): patch
    # and position embeddings are layer 0, block i is layer i + 1, necks and
    # heads get the full lr. The layer count comes from the backbone.
    # Weight decay on every parameter, norms, biases, pos_embed and rel-pos
    # tables included (optimizer.params.overrides = {},
    # weight_decay_norm = None in the official config, lines 36-37).
    paramwise_cfg=dict(
        layer_decay_rate=0.9, no_decay_1d=False, no_decay_names=()),
    # lr = 2.5e-5; betas and weight decay are common/optim.py's AdamW.
    optimizer=dict(
        type='AdamW', lr=2.5e-5, betas=(0.9, 0.999), weight_decay=0.1))

param_scheduler = [
    # WarmupParamScheduler(warmup_factor=0.001), linear.
    dict(
        type='LinearLR',
        start_factor=0.001,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    # MultiStepParamScheduler(values=[1.0, 0.1, 0.01],
    # milestones=[40000, max_iter - 1]).
    dict(
        type='MultiStepLR',
        by_epoch=False,
        begin=0,
        end=max_iters,
        milestones=[40000, max_iters - 1],
        gamma=0.1)
]

# The numbers above are for 64 images per step: 8 nodes x 8 GPUs x 1 image,
# no gradient accumulation (dataloader.train.total_batch_size = 64 in the
# official config; EVA-01/det/README.md trains on 64 GPUs). With another
# total batch, pass --cfg-options auto_scale_lr.enable=True to scale the lr
# linearly.
auto_scale_lr = dict(enable=False, base_batch_size=64)

default_hooks = dict(
    # Skip unreadable training files (logged, counted, summarised; stops
    # past the limits); check the val/test files first (docs/bad_data.md).
    unreadable_data=dict(type='eva_mm.UnreadableDataHook'),
    # detectron2's common/train.py: log_period = 20, checkpoint_period =
    # 5000. Only the last two are kept: an EVA-g checkpoint with its AdamW
    # state is about 13 GB.
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=5000,
        max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
