# Evaluation of the 1280 px LVIS model at 1536 px with up to 1000
# detections per image, the official EVA-01 LVIS evaluation
# (EVA-01/det/projects/ViTDet/configs/LVIS/
# cascade_mask_rcnn_vitdet_eva_1536.py:
# test_score_thresh=0.001, test_topk_per_image=1000,
# LVISEvaluator(max_dets_per_image=1000); EVA-01/det/README.md: 62.2 box AP,
# 55.0 mask AP on LVIS v1 val). Use with tools/test.py only.
_base_ = ['./eva-g-p16_cascade-mask-rcnn_lsj-1280_lvis-v1.py']

test_size = (1536, 1536)
model = dict(
    data_preprocessor=dict(pad_size_divisor=test_size[0]),
    # The 96 x 96 grid: the loaded 1280 px position embedding and global
    # rel-pos tables are resized once on loading, the tables with EVA's
    # cubic BEiT-style resize (interp_type = "beit", official config line
    # 20; modeling/backbone/utils.py:90-118).
    backbone=dict(img_size=test_size[0], rel_pos_resize='beit'),
    test_cfg=dict(rcnn=dict(score_thr=0.001, max_per_img=1000)))

test_pipeline = [
    dict(t, scale=test_size) if t['type'] == 'Resize' else t
    for t in _base_.test_pipeline
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(max_dets_per_image=1000)
test_evaluator = val_evaluator

# Evaluation only: the trained model's batch was 64 (8 x 8 GPUs x 1 image).
