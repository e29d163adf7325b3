# EVA-01 semantic segmentation, stage 1 of the released variant with BEiT
# relative position bias, layer scale and 9 Mask2Former decoder layers:
# 53.2 mIoU single scale on COCO-Stuff-164K (official seg/README.md,
# eva_sem_seg_mask2former_cocostuff_relpos_layerscale_9dec_53p2.pth).
# Numbers: the official config (baaivision/EVA, EVA-01/seg/configs/
# coco_stuff164k/eva_mask2former_896_80k_cocostuff164k_ss_relpos_layerscale_
# 9dec.py, "EVA config"); everything else as the plain model of
# eva-g-p16_vit-adapter_mask2former_60k_coco-stuff164k-896.py.
_base_ = ['./eva-g-p16_vit-adapter_mask2former_60k_coco-stuff164k-896.py']

model = dict(
    backbone=dict(
        rel_pos='bias',  # EVA config: use_rel_pos_bias=True
        layer_scale_init_value=1.0),  # EVA config: init_values=1.0
    decode_head=dict(
        # EVA config: transformer_decoder num_layers=9.
        transformer_decoder=dict(num_layers=9)))

# EVA config: lr=1e-5, layer_decay_rate=0.95.
optim_wrapper = dict(
    optimizer=dict(lr=1e-5), paramwise_cfg=dict(layer_decay_rate=0.95))
max_iters = 80000  # EVA config: schedule_80k
# EVA config: warmup_iters=1500, warmup='linear', warmup_ratio=1e-6 (the
# base's); policy='poly', power=1.0, min_lr=0.0 over all iterations.
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=max_iters + 1),
]
train_cfg = dict(max_iters=max_iters)
# Total batch 32 (official seg/README.md, COCO-Stuff table): 2 images per GPU
# (EVA config: samples_per_gpu=2) x 16 GPUs of 80 GB.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=32)
