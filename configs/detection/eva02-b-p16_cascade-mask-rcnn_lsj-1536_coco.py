# EVA-02-B Cascade Mask R-CNN on COCO 2017, LSJ at 1536 px: the official
# eva02_B_coco_sys (EVA-02/det/projects/ViTDet/configs/eva2_mim_to_coco/
# eva2_coco_cascade_mask_rcnn_vitdet_b_6attn_win32_1536_lrd0p7.py,
# "official" below; EVA-02/det/README.md: 58.9 box AP / 50.7 mask AP on
# COCO val with soft-NMS and maskness). The EVA-02-L 1536 px config with
# the official ViT-B numbers.
_base_ = ['./eva02-l-p16_cascade-mask-rcnn_lsj-1536_coco.py']

model = dict(
    backbone=dict(
        arch='eva02-base',  # embed_dim 768, depth 12, num_heads 12
        # "1, 3, 5, 7, 9, 11 for global attention" (official lines 27-28).
        global_block_indexes=(1, 3, 5, 7, 9, 11),
        drop_path_rate=0.1,  # drop_path_rate = 0.1
        with_cp=False),  # use_act_checkpoint = False
    neck=dict(in_channels=768))

# lr 5e-5 (as EVA-02-L 1536), layer decay 0.7 over 12 layers (official
# lines 30-31); global batch 128 as EVA-02-L 1536.
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.7))
