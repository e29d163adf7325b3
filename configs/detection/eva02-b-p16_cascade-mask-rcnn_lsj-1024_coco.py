# EVA-02-B Cascade Mask R-CNN on COCO 2017, LSJ at 1024 px: the official
# eva02_B_coco_bsl (EVA-02/det/projects/ViTDet/configs/eva2_mim_to_coco/
# eva2_coco_cascade_mask_rcnn_vitdet_b_4attn_1024_lrd0p7.py, "official"
# below; EVA-02/det/README.md: 55.5 box AP / 47.1 mask AP on COCO val).
# The EVA-02-L 1024 px config with the official ViT-B numbers.
_base_ = ['./eva02-l-p16_cascade-mask-rcnn_lsj-1024_coco.py']

model = dict(
    backbone=dict(
        # embed_dim 768, depth 12, num_heads 12, mlp_ratio 4*2/3
        # (official lines 19-22): from eva02_B_pt_in21k_p14to16.
        arch='eva02-base',
        global_block_indexes=(2, 5, 8, 11),  # "2, 5, 8, 11 for global"
        drop_path_rate=0.1),  # drop_path_rate = 0.1
    neck=dict(in_channels=768))

# lr 5e-5, layer decay 0.7 over 12 layers (official lines 29-30); the 60k
# schedule as EVA-02-L. Global batch 128 (total_batch_size = 128).
optim_wrapper = dict(
    paramwise_cfg=dict(layer_decay_rate=0.7), optimizer=dict(lr=5e-5))
auto_scale_lr = dict(base_batch_size=128)
