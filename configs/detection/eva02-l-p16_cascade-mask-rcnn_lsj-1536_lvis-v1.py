# EVA-02-L Cascade Mask R-CNN on LVIS v1, LSJ at 1536 px: the official
# system-level detector eva02_L_lvis_sys without Objects365 (EVA-02/det/
# projects/ViTDet/configs/eva2_mim_to_lvis/eva2_lvis_cascade_mask_rcnn
# _vitdet_l_8attn_win32_1536_lrd0p8.py, on top of
# eva2_coco_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8.py;
# EVA-02/det/README.md: 60.1 box AP / 53.5 mask AP on LVIS v1 val). The
# 1024 px LVIS config with the 1536 px model of
# eva02-l-p16_cascade-mask-rcnn_lsj-1536_coco.py; lr 1e-4, 40k iterations
# and batch 128 as at 1024 px (same lines).
_base_ = ['./eva02-l-p16_cascade-mask-rcnn_lsj-1024_lvis-v1.py']

image_size = (1536, 1536)  # ../common/coco_loader_lsj_1536.py: 1536
# The 0.02 score threshold stays (no override_score_thresh for LVIS in
# EVA-02/det/README.md); the evaluator keeps 300 detections.
model = dict(
    _base_.eva02_sys_model, test_cfg=dict(rcnn=_base_.eva02_soft_nms_rcnn))
# The 1024 px LSJ pipelines at 1536 px.
train_dataloader = dict(dataset=dict(pipeline=[
    dict(t, **{k: image_size for k in t if k in _base_.eva02_lsj_sizes})
    for t in _base_.train_pipeline]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(t, **{k: image_size for k in t if k in _base_.eva02_lsj_sizes})
    for t in _base_.test_pipeline]))
test_dataloader = val_dataloader
