# EVA-02-L Cascade R-CNN (boxes only) on Objects365 v2, LSJ at 1536 px:
# the official intermediate detection fine-tuning eva02_L_m38m_to_o365 /
# eva02_L_in21k_to_o365 (EVA-02/det/projects/ViTDet/configs/eva2_o365/
# eva2_o365_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8.py, "official"
# below), whose checkpoint the o365-pre COCO and LVIS configs start from.
# The EVA-01 Objects365 config with the EVA-02 backbone and numbers.
_base_ = [
    './eva-g-p16_cascade-rcnn_lsj-1024_objects365.py',
    '../_base_/models/eva02-p16_vitdet-backbone.py'
]

image_size = (1536, 1536)  # objects365_trainval_loader_lsj_1536.py
model = dict(
    data_preprocessor=dict(pad_size_divisor=image_size[0]),  # square_pad
    # img_size = 1536, window_size = 16 (not 32), the 8 global blocks,
    # drop_path_rate = 0.4, use_act_checkpoint = False (official lines
    # 24-38); no mask head (lines 17-21).
    backbone=dict(
        _base_.eva02_det_backbone,
        img_size=image_size[0],
        global_block_indexes=_base_.eva02_l_global_8),
    neck=dict(in_channels=1024),
    # detectron2's default inference (no evaluation options published):
    # NMS at 0.5, test_score_thresh=0.05, 100 detections per image.
    test_cfg=dict(
        rcnn=dict(
            score_thr=0.05,
            nms=dict(_delete_=True, type='nms', iou_threshold=0.5),
            max_per_img=100)))

# The 1024 px LSJ pipelines at 1536 px. The official run trains on
# Objects365 train + val (common/data/objects365_trainval.py); this config
# keeps the train split (docs/eva02.md).
train_dataloader = dict(dataset=dict(pipeline=[
    dict(t, **{k: image_size for k in t if k in _base_.eva02_lsj_sizes})
    for t in _base_.train_pipeline]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(t, **{k: image_size for k in t if k in _base_.eva02_lsj_sizes})
    for t in _base_.test_pipeline]))
test_dataloader = val_dataloader

# lr 6e-5, layer decay 0.8 over 24 layers (official lines 40-43), 400k
# iterations, steps at 8/10 and 9/10, 5000 warm-up iterations (45-55);
# checkpoints every 2500 and evaluation every 10000 iterations (60-61).
max_iters = 400000
train_cfg = dict(max_iters=max_iters, val_interval=10000)
default_hooks = dict(checkpoint=dict(interval=2500))
optim_wrapper = dict(
    paramwise_cfg=dict(layer_decay_rate=0.8), optimizer=dict(lr=6e-5))
param_scheduler = [
    dict(_base_.param_scheduler[0], end=5000),
    dict(
        _base_.param_scheduler[1],
        end=max_iters,
        milestones=[max_iters * 8 // 10, max_iters * 9 // 10])
]
# Global batch 160 (total_batch_size = 160, official line 58).
auto_scale_lr = dict(base_batch_size=160)
