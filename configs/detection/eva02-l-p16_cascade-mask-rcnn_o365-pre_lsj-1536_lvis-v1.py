# EVA-02-L Cascade Mask R-CNN on LVIS v1 from the Objects365 detector, LSJ
# at 1536 px: the official eva02_L_lvis_sys_o365 (EVA-02/det/projects/
# ViTDet/configs/eva2_o365_to_lvis/eva2_o365_to_lvis_cascade_mask_rcnn
# _vitdet_l_8attn_1536_lrd0p8.py, "official" below, on top of the
# o365_to_coco config; EVA-02/det/README.md: 65.2 box AP / 57.3 mask AP on
# LVIS v1 val, EMA weights, soft-NMS, maskness, 1000 detections per image).
# The 1536 px LVIS config with the Objects365 fine-tuning numbers. Starts
# from eva02_L_in21k_to_o365 (IN-21K MIM weights, README).
_base_ = ['./eva02-l-p16_cascade-mask-rcnn_lsj-1536_lvis-v1.py']

# window_size = 16, drop_path_rate = 0.3 (o365_to_coco lines 21, 27).
model = dict(backbone=dict(window_size=16, drop_path_rate=0.3))
# dataloader.evaluator.max_dets_per_image=1000 in the official evaluation
# command (no cap before it: max_per_img=-1 with soft-NMS).
val_evaluator = dict(max_dets_per_image=1000)
test_evaluator = val_evaluator

# lr 4e-5 (o365_to_coco line 34), 70k iterations (official line 69) at a
# constant lr after 700 warm-up iterations (1%), EMA; evaluation and
# checkpoints every 5000 iterations (lines 70-71).
max_iters = 70000
train_cfg = dict(max_iters=max_iters, val_interval=5000)
default_hooks = dict(checkpoint=dict(interval=5000))
optim_wrapper = dict(optimizer=dict(lr=4e-5))
param_scheduler = [
    dict(_base_.eva02_o365_pre_param_scheduler[0], end=max_iters // 100)
]
custom_hooks = [_base_.eva02_ema_hook]
# Global batch 64 (total_batch_size = 64, official line 67).
auto_scale_lr = dict(base_batch_size=64)
load_from = None
