# The COCO-Stuff-164K recipe of eva-g-p16_vit-adapter_mask2former_60k_coco-
# stuff164k-896.py with a ViT-L backbone (24 blocks of width 1024, e.g. the
# MIM model of configs/mim/eva-mim_vit-large-p14_clip-l14_128xb32-150e.py).
# EVA-01 reports no ViT-L segmentation; the size-dependent numbers are
# ViT-Adapter's BEiT-Adapter-L Mask2Former 896 config (czczup/ViT-Adapter,
# segmentation/configs/coco_stuff164k/
# mask2former_beit_adapter_large_896_80k_cocostuff164k_ss.py, "ViT-Adapter-L
# config"). Head, data and schedule length stay EVA's, so that only the
# backbone differs from the giant run.
_base_ = ['./eva-g-p16_vit-adapter_mask2former_60k_coco-stuff164k-896.py']

pretrained = 'checkpoints/eva-l-p16-896.pth'
model = dict(
    backbone=dict(
        arch='large',  # ViT-Adapter-L config: 1024 wide, depth 24, 16 heads
        drop_path_rate=0.3,  # ViT-Adapter-L config
        deform_num_heads=16,  # ViT-Adapter-L config
        # ViT-Adapter-L config: interaction_indexes.
        interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
        init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[1024] * 4))
# ViT-Adapter-L config: lr=2e-5, layer_decay_rate=0.90.
optim_wrapper = dict(
    optimizer=dict(lr=2e-5), paramwise_cfg=dict(layer_decay_rate=0.9))
