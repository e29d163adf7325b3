# EVA-02-L UperNet on ADE20K, 512 x 512 crops: the official
# eva02_L_ade_seg_upernet_sz512 (baaivision/EVA, EVA-02/seg/configs/eva02/
# upernet/upernet_eva02_large_24_512_slide_80k.py, "official" below;
# EVA-02/seg/README.md: 59.8 mIoU single-scale, 60.4 multi-scale with
# upernet_eva02_large_24_512_slide_ms_eval.py, here --tta). Starts from the
# MIM weights eva02_L_pt_m38m_p14to16.pt (README).
_base_ = [
    '../_base_/models/upernet_eva02-vit.py',
    'mmseg::_base_/datasets/ade20k.py',
    '../_base_/schedules/eva-seg_adamw-layer-decay_poly.py',
    'mmseg::_base_/default_runtime.py'
]

optim_wrapper = dict(
    # fp16 (IterBasedRunnerAmp with use_fp16=True, official lines 80-91);
    # on CPU pass optim_wrapper.type=OptimWrapper.
    type='AmpOptimWrapper',
    # lr=4e-5, weight_decay=0.05 (official lines 63-69).
    optimizer=dict(lr=4e-5),
    # layer_decay_rate=0.9 over num_layers=24 (+2): embeddings layer 0,
    # block i layer i + 1, neck and heads the full lr (EVA-02/seg/
    # mmcv_custom/layer_decay_optimizer_constructor.py:6-16).
    paramwise_cfg=dict(layer_decay_rate=0.9, layer_zero_prefixes=()))
max_iters = 80000  # schedule_80k.py
warmup_iters = 1500  # warmup_iters=1500 (official lines 71-75)
# warmup='linear', warmup_ratio=1e-6; poly power 1.0 to min_lr 0 over all
# iterations with the warm-up multiplied on top (mmcv 1.x); + 1 for
# mmengine's end - begin - 1 steps (as the EVA-01 segmentation configs).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=warmup_iters + 1),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0,
         end=max_iters + 1)
]
train_cfg = dict(max_iters=max_iters)
# "trained on 8 GPUs with 2 images per GPU" (official lines 77-78): total
# batch 16 (README); auto_scale_lr.enable=True rescales the lr for another.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
