# The ADE20K recipe of eva-g-p16_vit-adapter_mask2former_coco-stuff-pre_20k_
# ade20k-896.py with the ViT-L model of
# eva-l-p16_vit-adapter_mask2former_60k_coco-stuff164k-896.py as start.
# Size-dependent numbers: ViT-Adapter's BEiT-Adapter-L Mask2Former ADE20K
# config, which also starts from its COCO-Stuff model (czczup/ViT-Adapter,
# segmentation/configs/ade20k/mask2former_beit_adapter_large_896_80k_ade20k_ss.py,
# "ViT-Adapter-L ADE config"); data and schedule length stay EVA's.
_base_ = [
    './eva-g-p16_vit-adapter_mask2former_coco-stuff-pre_20k_ade20k-896.py'
]

load_from = ('work_dirs/eva-l-p16_vit-adapter_mask2former_60k_'
             'coco-stuff164k-896/iter_60000.pth')
model = dict(
    backbone=dict(
        arch='large',  # ViT-Adapter-L ADE config: 1024 wide, depth 24
        drop_path_rate=0.3,  # ViT-Adapter-L ADE config
        deform_num_heads=16,  # ViT-Adapter-L ADE config
        # ViT-Adapter-L ADE config: interaction_indexes.
        interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]]),
    decode_head=dict(in_channels=[1024] * 4))
# ViT-Adapter-L ADE config: lr=2e-5, layer_decay_rate=0.90.
optim_wrapper = dict(
    optimizer=dict(lr=2e-5), paramwise_cfg=dict(layer_decay_rate=0.9))
