# EVA-02-L Cascade Mask R-CNN on COCO 2017, LSJ at 1536 px: the official
# system-level detector eva02_L_coco_sys without Objects365 (EVA-02/det/
# projects/ViTDet/configs/eva2_mim_to_coco/eva2_coco_cascade_mask_rcnn
# _vitdet_l_8attn_win32_1536_lrd0p8.py, "official" below; EVA-02/det/
# README.md: 62.3 box AP / 53.8 mask AP on COCO val, with soft-NMS and
# maskness).
_base_ = ['./eva02-l-p16_cascade-mask-rcnn_lsj-1024_coco.py']

image_size = (1536, 1536)  # ../common/coco_loader_lsj_1536.py: 1536
model = dict(
    # Square padding to 1536 (square_pad = 1536, official line 16).
    data_preprocessor=dict(pad_size_divisor=image_size[0]),
    backbone=dict(
        img_size=image_size[0],  # img_size = 1536
        window_size=32,  # window_size = 32
        global_block_indexes=_base_.eva02_l_global_8,
        with_cp=True),  # use_act_checkpoint = True
    # The official evaluation command (EVA-02/det/README.md): soft-NMS
    # (use_soft_nms=True, method=linear, iou_threshold=0.6,
    # override_score_thresh=0.0), all detections kept, and
    # maskness_thresh=0.5 for the mask scores.
    roi_head=dict(mask_head=dict(rescore_by_maskness=True)),
    test_cfg=dict(
        rcnn=dict(
            score_thr=0.0,
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

# lr 5e-5 (official line 31); layer decay 0.8 and the 60k schedule as the
# 1024 px config. Global batch 128 (total_batch_size = 128, line 45).
optim_wrapper = dict(optimizer=dict(lr=5e-5))
auto_scale_lr = dict(base_batch_size=128)
