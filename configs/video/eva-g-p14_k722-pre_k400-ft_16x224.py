# EVA-01 video stage 2 on Kinetics-400: 89.7 top-1 with 4 x 3 views
# (arXiv:2211.07636; official EVA-01/video/configs/kinetics400_ft.yaml).
# 16 frames (NUM_FRAMES 16; the K-722 model's 8-frame position embedding is
# resized trilinearly on load), DROP_PATH_RATE 0.2, LABEL_SMOOTH 0.1, no
# Mixup/CutMix, LR 1e-6 with WARMUP_EPOCHS 0 and LR_MIN 1e-6 (a constant
# lr), LAYER_WISE_DECAY 0.95, EPOCHS 1, total batch 256.
_base_ = [
    '_base_/models/eva-g-p14_video.py',
    '_base_/datasets/kinetics_16x224.py',
    '_base_/schedules/eva-video_adamw.py',
    'mmaction::_base_/default_runtime.py',
]
custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)

num_classes = 400
model = dict(cls_head=dict(num_classes=num_classes))
# The K-722 checkpoint with its head rows picked by class name (the
# official CLASS_MAPPING k722_to_k400_mapping.npy):
#   python tools/model_converters/kinetics_head_mapping.py \
#       work_dirs/eva-g-p14_k722-intermediate-ft_8x224/epoch_40.pth \
#       --source-labels data/k722_labels.txt \
#       --target-labels data/k400_labels.txt \
#       checkpoints/eva_video_k722_to_k400.pth
load_from = 'checkpoints/eva_video_k722_to_k400.pth'

optim_wrapper = dict(
    optimizer=dict(lr=1e-6), paramwise_cfg=dict(layer_decay_rate=0.95))
param_scheduler = [dict(type='ConstantLR', factor=1.0)]
train_cfg = dict(max_epochs=1)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))
