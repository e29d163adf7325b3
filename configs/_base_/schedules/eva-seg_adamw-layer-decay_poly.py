# The EVA-01 semantic segmentation schedule (official configs: baaivision/EVA,
# EVA-01/seg/configs/{ade20k,coco_stuff164k}/eva_mask2former_896_*.py):
# AdamW with layer-wise lr decay, iteration based, mmcv 1.x's poly decay
# (power 1.0 to 0) over all iterations with a linear warm-up from 1e-6 of
# the lr multiplied on top of it. Each experiment sets the lr and
# layer_decay_rate; the length is the COCO-Stuff-164K stage's, which the other
# experiments replace, restating the two schedulers' ends.
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
    # Skip unreadable training files (logged, counted, summarised; stops
    # past the limits); check the val/test files first (docs/bad_data.md).
    unreadable_data=dict(type='eva_mm.UnreadableDataHook'),
    # Official: checkpoint_config interval=1000, max_keep_ckpts=10;
    # evaluation save_best='mIoU'.
    checkpoint=dict(interval=1000, max_keep_ckpts=10, save_best='mIoU'))

# The official COCO-Stuff-164K config (EVA-01/seg/configs/coco_stuff164k/
# eva_mask2former_896_60k_cocostuff164k_ss.py, "EVA config"): schedule_60k,
# warmup_iters=1500.
max_iters = 60000
warmup_iters = 1500
# mmengine's schedulers run end - begin - 1 steps, hence the + 1: the
# factors are then mmcv 1.x's r + (1 - r) t / W and (1 - t / T) exactly.
param_scheduler = [
    # EVA config: warmup='linear', warmup_ratio=1e-6.
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=warmup_iters + 1),
    # EVA config: policy='poly', power=1.0, min_lr=0.0.
    # Over all iterations, from 0: mmengine multiplies the two schedulers'
    # factors during the warm-up, lr = lr0 * warmup(t) * (1 - t / T), as
    # mmcv 1.x's PolyLrUpdaterHook with warmup='linear' (the official
    # runner) does.
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0,
         end=max_iters + 1),
]
# Official: evaluation interval=1000.
train_cfg = dict(max_iters=max_iters, val_interval=1000)
