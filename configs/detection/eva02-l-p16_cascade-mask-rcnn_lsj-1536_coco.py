# EVA-02-L Cascade Mask R-CNN on COCO 2017, LSJ at 1536 px: the official
# system-level detector eva02_L_coco_sys without Objects365 (EVA-02/det/
# projects/ViTDet/configs/eva2_mim_to_coco/eva2_coco_cascade_mask_rcnn
# _vitdet_l_8attn_win32_1536_lrd0p8.py, "official" below; EVA-02/det/
# README.md: 62.3 box AP / 53.8 mask AP on COCO val, with soft-NMS and
# maskness).
_base_ = ['./eva02-l-p16_cascade-mask-rcnn_lsj-1024_coco.py']

image_size = (1536, 1536)  # ../common/coco_loader_lsj_1536.py: 1536
model = dict(
    _base_.eva02_sys_model,
    test_cfg=dict(rcnn=dict(_base_.eva02_soft_nms_rcnn, score_thr=0.0)))
# The 1024 px LSJ pipelines at 1536 px.
train_dataloader = dict(dataset=dict(pipeline=[
    dict(t, **{k: image_size for k in t if k in _base_.eva02_lsj_sizes})
    for t in _base_.train_pipeline]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(t, **{k: image_size for k in t if k in _base_.eva02_lsj_sizes})
    for t in _base_.test_pipeline]))
test_dataloader = val_dataloader

# lr 5e-5 (official line 31); layer decay 0.8 and the 60k schedule as the
# 1024 px config. Global batch 128 (total_batch_size = 128, line 45).
optim_wrapper = dict(optimizer=dict(lr=5e-5))
auto_scale_lr = dict(base_batch_size=128)
