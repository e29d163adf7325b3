# EVA-g Cascade R-CNN (boxes only) on Objects365 v2: EVA-01's intermediate
# detection fine-tuning from the MIM weights, whose checkpoint the COCO and
# LVIS configs start from (load_from there). EVA-01/det/README.md publishes
# the result (eva_o365.pth, 1.1B parameters, 380k iterations) but not the
# config: the model and optimizer here are the COCO recipe's
# (eva-g-p16_cascade-mask-rcnn_lsj-1024_coco.py), and the schedule keeps its
# shape, 500 warm-up iterations and steps at 8/9 of training and at the last
# iteration, stretched to 380k iterations.
_base_ = [
    '../_base_/models/cascade-mask-rcnn_eva-g-p16_simple-fpn.py',
    '../_base_/datasets/objects365v2-detection_lsj-1024.py',
    '../_base_/schedules/eva-det_adamw-layer-decay_45k.py'
]

image_size = (1024, 1024)
num_classes = 365
model = dict(
    # See eva-g-p16_cascade-mask-rcnn_lsj-1024_coco.py: square padding.
    data_preprocessor=dict(pad_size_divisor=image_size[0]),
    backbone=dict(img_size=image_size[0]),
    roi_head=dict(
        bbox_head=[
            dict(stage, num_classes=num_classes)
            for stage in _base_.model.roi_head.bbox_head
        ],
        mask_roi_extractor=None,
        mask_head=None))

max_iters = 380000  # EVA-01/det/README.md: 380k iterations on Objects365
# Validation and checkpoints every 20k iterations: a choice, not published.
train_cfg = dict(max_iters=max_iters, val_interval=20000)
param_scheduler = [
    _base_.param_scheduler[0],
    dict(
        _base_.param_scheduler[1],
        end=max_iters,
        milestones=[max_iters * 8 // 9, max_iters - 1])
]
default_hooks = dict(checkpoint=dict(interval=20000))

# Start from the EVA-g MIM weights at patch 16, as the official
# eva_psz14to16.pt (14 x 14 grid, resized to the training grid on loading;
# docs/detection.md):
#   python tools/model_converters/convert_eva.py --src-format official \
#       eva_psz14.pt eva-g-p16.pth --patch-size 16 --img-size 224
# then --cfg-options model.backbone.init_cfg.type=Pretrained \
#   model.backbone.init_cfg.checkpoint=eva-g-p16.pth
load_from = None

# Global batch: not published for Objects365; 64 (8 nodes x 8 GPUs x 1
# image, the COCO recipe's) assumed, auto_scale_lr.base_batch_size = 64.
