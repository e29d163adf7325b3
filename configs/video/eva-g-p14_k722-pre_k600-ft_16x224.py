# EVA-01 video stage 2 on Kinetics-600: 89.8 top-1 with 4 x 3 views
# (arXiv:2211.07636; official EVA-01/video/configs/kinetics600_ft.yaml).
# The K-400 recipe with 600 classes and EPOCHS 2; global batch 256 = 64
# GPUs x 1 clip x 4 accumulation steps as K-400 (yaml ACCUMULATION_STEPS 4,
# scripts/run_k600_ft.sh; EVA-01/logs/video/ft_k600_log.txt: 1612
# iterations per epoch).
_base_ = ['eva-g-p14_k722-pre_k400-ft_16x224.py']

num_classes = 600
model = dict(cls_head=dict(num_classes=num_classes))
data_root = 'data/k600'
train_dataloader = dict(
    dataset=dict(
        ann_file='data/k600_train.txt', data_prefix=dict(video=data_root)))
val_dataloader = dict(
    dataset=dict(
        ann_file='data/k600_val.txt', data_prefix=dict(video=data_root)))
test_dataloader = dict(
    dataset=dict(
        ann_file='data/k600_val.txt', data_prefix=dict(video=data_root)))
# Made with tools/model_converters/kinetics_head_mapping.py as in the K-400
# config, with --target-labels data/k600_labels.txt.
load_from = 'checkpoints/eva_video_k722_to_k600.pth'
train_cfg = dict(max_epochs=2)
