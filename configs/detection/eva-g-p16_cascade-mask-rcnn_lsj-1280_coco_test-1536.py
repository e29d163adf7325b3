# Evaluation of the 1280 px COCO model at 1536 px, the official EVA-01
# evaluation (EVA-01/det/projects/ViTDet/configs/COCO/
# cascade_mask_rcnn_vitdet_eva_1536.py: coco_loader_lsj_1536, square_pad =
# 1536, pos embed for 1280 resized at run time). The relative position
# tables of the global blocks, learned for the 80 x 80 grid, are
# interpolated to the 96 x 96 grid. Use with tools/test.py only.
_base_ = ['./eva-g-p16_cascade-mask-rcnn_lsj-1280_coco.py']

test_size = (1536, 1536)
model = dict(
    data_preprocessor=dict(pad_size_divisor=test_size[0]),
    # The 96 x 96 grid: the loaded 1280 px position embedding and global
    # rel-pos tables are resized once on loading, the tables with EVA's
    # cubic BEiT-style resize (interp_type = "beit", official config line
    # 20; modeling/backbone/utils.py:90-118).
    backbone=dict(img_size=test_size[0], rel_pos_resize='beit'))

test_pipeline = [
    dict(t, scale=test_size) if t['type'] == 'Resize' else t
    for t in _base_.test_pipeline
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# Evaluation only: the trained model's batch was 64 (8 x 8 GPUs x 1 image).
