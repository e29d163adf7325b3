# EVA-01 semantic segmentation, stage 2 of the released variant with BEiT
# relative position bias, layer scale and 9 Mask2Former decoder layers: the
# COCO-Stuff-164K model of eva-g-p16_vit-adapter-relpos-ls_mask2former-9dec_
# 80k_coco-stuff164k-896.py fine-tuned on ADE20K, 61.5 mIoU single scale and
# 62.3 multi-scale + flip (official seg/README.md,
# eva_sem_seg_mask2former_ade_relpos_layerscale_9dec_ss61p5_ms62p3.pth).
# Numbers: the official config (baaivision/EVA, EVA-01/seg/configs/ade20k/
# eva_mask2former_896_40k_coco164k2ade20k_ms_relpos_layerscale_9dec.py,
# "EVA config"); data and test as the plain model of
# eva-g-p16_vit-adapter_mask2former_coco-stuff-pre_20k_ade20k-896.py.
_base_ = [
    './eva-g-p16_vit-adapter_mask2former_coco-stuff-pre_20k_ade20k-896.py'
]

# EVA config: load_from the rel-pos COCO-Stuff model.
load_from = ('work_dirs/eva-g-p16_vit-adapter-relpos-ls_mask2former-9dec_'
             '80k_coco-stuff164k-896/iter_80000.pth')
model = dict(
    backbone=dict(
        rel_pos='bias',  # EVA config: use_rel_pos_bias=True
        layer_scale_init_value=1.0),  # EVA config: init_values=1.0
    decode_head=dict(
        # EVA config: transformer_decoder num_layers=9.
        transformer_decoder=dict(num_layers=9)))

# EVA config: lr=1e-5, layer_decay_rate=0.9.
optim_wrapper = dict(
    optimizer=dict(lr=1e-5), paramwise_cfg=dict(layer_decay_rate=0.9))
max_iters = 40000  # EVA config: schedule_40k
warmup_iters = 1500  # EVA config: warmup_iters
# EVA config: warmup='linear', warmup_ratio=1e-6; policy='poly', power=1.0,
# min_lr=0.0 over all iterations (the schedule base's, over these lengths).
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_iters + 1),
    dict(_base_.param_scheduler[1], end=max_iters + 1),
]
train_cfg = dict(max_iters=max_iters)
# Total batch 32 (official seg/README.md, ADE20K table): 2 images per GPU
# (EVA config: samples_per_gpu=2) x 16 GPUs of 80 GB.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=32)
