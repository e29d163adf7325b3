# EVA-02-L Cascade Mask R-CNN on COCO 2017 from the Objects365 detector,
# LSJ at 1536 px: the official eva02_L_coco_det_sys_o365 /
# eva02_L_coco_seg_sys_o365 (EVA-02/det/projects/ViTDet/configs/
# eva2_o365_to_coco/eva2_o365_to_coco_cascade_mask_rcnn_vitdet_l_8attn_1536
# _lrd0p8.py, "official" below; EVA-02/det/README.md: 64.1 box AP (det
# checkpoint) / 55.4 mask AP (seg checkpoint of the same run) on COCO val,
# EMA weights, soft-NMS and maskness). The 1536 px COCO config with the
# official fine-tuning numbers.
_base_ = ['./eva02-l-p16_cascade-mask-rcnn_lsj-1536_coco.py']

model = dict(
    backbone=dict(
        window_size=16,  # window_size = 16 (official line 21)
        drop_path_rate=0.3))  # drop_path_rate = 0.3 (line 27)

# lr 4e-5 (line 34), layer decay 0.8; 40k iterations at a constant lr
# after 400 warm-up iterations (1% of 40k, lines 39-52); EMA (41-43).
max_iters = 40000
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=4e-5))
param_scheduler = [
    dict(_base_.eva02_o365_pre_param_scheduler[0], end=max_iters // 100)
]
custom_hooks = [_base_.eva02_ema_hook]
# Global batch 64 (total_batch_size = 64, line 55).
auto_scale_lr = dict(base_batch_size=64)

# The checkpoint of eva02-l-p16_cascade-rcnn_lsj-1536_objects365.py (or the
# released eva02_L_m38m_to_o365.pth converted with --src-format
# official-eva02-det): its new mask head is trained from scratch.
load_from = None
