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
model = dict(
    data_preprocessor=dict(pad_size_divisor=image_size[0]),  # square_pad
    backbone=dict(
        img_size=image_size[0],
        window_size=32,  # window_size = 32
        global_block_indexes=_base_.eva02_l_global_8,
        with_cp=True),  # use_act_checkpoint = True
    # The official evaluation command (EVA-02/det/README.md): soft-NMS
    # (linear, iou_threshold=0.6) after the 0.02 score threshold (no
    # override_score_thresh for LVIS), all detections kept up to the
    # evaluator's 300, maskness_thresh=0.5.
    roi_head=dict(mask_head=dict(rescore_by_maskness=True)),
    test_cfg=dict(
        rcnn=dict(
            nms=dict(
                _delete_=True,
                type='soft_nms',
                iou_threshold=0.6,
                method='linear'),
            max_per_img=-1)))

# The 1024 px LSJ pipelines at 1536 px.
train_pipeline = [
    dict(t, **{k: image_size for k in ('scale', 'crop_size') if k in t})
    for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, **{k: image_size for k in ('scale', ) if k in t})
    for t in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
