# EVA-02-B Cascade Mask R-CNN on LVIS v1, LSJ at 1024 px: the official
# eva02_B_lvis_bsl (EVA-02/det/projects/ViTDet/configs/eva2_mim_to_lvis/
# eva2_lvis_cascade_mask_rcnn_vitdet_b_4attn_1024_lrd0p7.py, "official"
# below; EVA-02/det/README.md: 47.1 box AP / 41.4 mask AP on LVIS v1 val).
# The EVA-02-L 1024 px LVIS config with the official ViT-B numbers.
_base_ = ['./eva02-l-p16_cascade-mask-rcnn_lsj-1024_lvis-v1.py']

model = dict(
    backbone=dict(
        arch='eva02-base',  # embed_dim 768, depth 12, num_heads 12
        global_block_indexes=(2, 5, 8, 11),  # "2, 5, 8, 11 for global"
        drop_path_rate=0.1),  # drop_path_rate = 0.1
    neck=dict(in_channels=768))

# lr 1e-4 (official line 67), layer decay 0.7 over 12 layers (from
# eva2_coco_..._b_4attn_1024_lrd0p7.py:30), 50k iterations with steps at
# 8/10 and 9/10 and 1000 warm-up iterations (lines 69-74); batch 128.
max_iters = 50000
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.7))
param_scheduler = [
    _base_.param_scheduler[0],
    dict(
        _base_.param_scheduler[1],
        end=max_iters,
        milestones=[max_iters * 8 // 10, max_iters * 9 // 10])
]
