# The ADE20K recipe of eva-g-p16_vit-adapter_mask2former_coco-stuff-pre_20k_
# ade20k-896.py with the ViT-B model of
# eva-b-p16_vit-adapter_mask2former_60k_coco-stuff164k-896.py as start.
# ViT-Adapter has no ViT-B Mask2Former ADE20K config; the size-dependent
# numbers are those of the ViT-B COCO-Stuff config (ViT-Adapter's
# BEiT-Adapter-B Mask2Former, czczup/ViT-Adapter, segmentation/configs/
# coco_stuff10k/mask2former_beit_adapter_base_512_40k_cocostuff10k_ss.py,
# "ViT-Adapter-B config"); data and schedule length stay EVA's.
_base_ = [
    './eva-g-p16_vit-adapter_mask2former_coco-stuff-pre_20k_ade20k-896.py'
]

load_from = ('work_dirs/eva-b-p16_vit-adapter_mask2former_60k_'
             'coco-stuff164k-896/iter_60000.pth')
model = dict(
    backbone=dict(
        arch='base',  # ViT-Adapter-B config: 768 wide, depth 12, 12 heads
        drop_path_rate=0.2,  # ViT-Adapter-B config
        deform_num_heads=12,  # ViT-Adapter-B config
        # ViT-Adapter-B config: interaction_indexes.
        interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]]),
    decode_head=dict(in_channels=[768] * 4))
# ViT-Adapter-B config: lr=3e-5, layer_decay_rate=0.95.
optim_wrapper = dict(
    optimizer=dict(lr=3e-5), paramwise_cfg=dict(layer_decay_rate=0.95))
