# The EVA-01 semantic segmentation schedule (official configs: baaivision/EVA,
# EVA-01/seg/configs/{ade20k,coco_stuff164k}/eva_mask2former_896_*.py):
# AdamW with layer-wise lr decay, iteration based, mmcv 1.x's poly decay
# (power 1.0 to 0) over all iterations with a linear warm-up from 1e-6 of
# the lr multiplied on top of it. Each experiment sets the lr,
# layer_decay_rate, max_iters and the warm-up length.
_base_ = ['mmseg::_base_/schedules/schedule_80k.py']

optim_wrapper = dict(
    # Official: betas=(0.9, 0.999), weight_decay=0.05.
    optimizer=dict(
        _delete_=True, type='AdamW', betas=(0.9, 0.999), weight_decay=0.05),
    # Official: LayerDecayOptimizerConstructor (seg/mmcv_custom/
    # layer_decay_optimizer_constructor.py:17-38): embeddings and the
    # head's query/class/mask embeddings layer 0, block i layer i + 1, the
    # adapter and the rest of the head at the full lr.
    constructor='eva_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_zero_prefixes=('decode_head.mask_embed', 'decode_head.cls_embed',
                             'decode_head.level_embed',
                             'decode_head.query_embed',
                             'decode_head.query_feat'),
        # Official: no weight decay for 1-D parameters and biases only; its
        # exemption of ``name in ('pos_embed', 'cls_token')`` never matches
        # the full names (backbone.pos_embed), so pos_embed, cls_token and
        # the rel-pos tables are decayed (same file, lines 68-70).
        no_decay_names=()))
default_hooks = dict(
    # Official: checkpoint_config interval=1000, max_keep_ckpts=10;
    # evaluation save_best='mIoU'.
    checkpoint=dict(interval=1000, max_keep_ckpts=10, save_best='mIoU'))
# Official: evaluation interval=1000.
train_cfg = dict(val_interval=1000)
