# The EVA-01 semantic segmentation schedule (official configs: baaivision/EVA,
# EVA-01/seg/configs/{ade20k,coco_stuff164k}/eva_mask2former_896_*.py):
# AdamW with layer-wise lr decay, iteration based, linear warm-up from 1e-6 of
# the lr, then poly decay with power 1.0 to 0. Each experiment sets the lr,
# layer_decay_rate, max_iters and the warm-up length.
_base_ = ['mmseg::_base_/schedules/schedule_80k.py']

optim_wrapper = dict(
    # Official: betas=(0.9, 0.999), weight_decay=0.05.
    optimizer=dict(
        _delete_=True, type='AdamW', betas=(0.9, 0.999), weight_decay=0.05),
    # Official: LayerDecayOptimizerConstructor (BEiT rule: embeddings layer
    # 0, block i layer i + 1, adapter and head at the full lr).
    constructor='eva_mm.LayerDecayOptimWrapperConstructor')
default_hooks = dict(
    # Official: checkpoint_config interval=1000, max_keep_ckpts=10;
    # evaluation save_best='mIoU'.
    checkpoint=dict(interval=1000, max_keep_ckpts=10, save_best='mIoU'))
# Official: evaluation interval=1000.
train_cfg = dict(val_interval=1000)
