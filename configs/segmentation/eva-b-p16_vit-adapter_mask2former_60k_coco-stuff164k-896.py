# The COCO-Stuff-164K recipe of eva-g-p16_vit-adapter_mask2former_60k_coco-
# stuff164k-896.py with a ViT-B backbone (12 blocks of width 768, e.g. the
# MIM model of configs/mim/eva-mim_vit-base-p14_clip-l14_128xb32-150e.py).
# EVA-01 reports no ViT-B segmentation and ViT-Adapter has no ViT-B
# Mask2Former at 896; the size-dependent numbers are ViT-Adapter's
# BEiT-Adapter-B Mask2Former config (czczup/ViT-Adapter,
# segmentation/configs/coco_stuff10k/
# mask2former_beit_adapter_base_512_40k_cocostuff10k_ss.py, "ViT-Adapter-B
# config"). Head (1024 channels, 200 queries), data and schedule stay EVA's,
# so that only the backbone differs from the giant run; ViT-Adapter's own
# ViT-B head is 256 wide with 100 queries.
_base_ = ['./eva-g-p16_vit-adapter_mask2former_60k_coco-stuff164k-896.py']

pretrained = 'checkpoints/eva-b-p16-896.pth'
model = dict(
    backbone=dict(
        arch='base',  # ViT-Adapter-B config: 768 wide, depth 12, 12 heads
        drop_path_rate=0.2,  # ViT-Adapter-B config
        deform_num_heads=12,  # ViT-Adapter-B config
        # ViT-Adapter-B config: interaction_indexes.
        interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]],
        init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[768] * 4))
# ViT-Adapter-B config: lr=3e-5, layer_decay_rate=0.95.
optim_wrapper = dict(
    optimizer=dict(lr=3e-5), paramwise_cfg=dict(layer_decay_rate=0.95))
