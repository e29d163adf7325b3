# EVA-01 video stage 2 on Kinetics-700: 82.9 top-1 with 4 x 3 views
# (arXiv:2211.07636; official EVA-01/video/configs/kinetics700_ft.yaml).
# The K-400 recipe with 700 classes and EPOCHS 2; global batch 256 = 64
# GPUs x 1 clip x 4 accumulation steps as K-400 (yaml ACCUMULATION_STEPS 4,
# scripts/run_k700_ft.sh; the logged run, EVA-01/logs/video/
# ft_k700_log.txt, reached 256 as 128 x 1 x 2).
_base_ = ['eva-g-p14_k722-pre_k400-ft_16x224.py']

num_classes = 700
model = dict(cls_head=dict(num_classes=num_classes))
data_root = 'data/k700'
train_dataloader = dict(
    dataset=dict(
        ann_file='data/k700_train.txt', data_prefix=dict(video=data_root)))
val_dataloader = dict(
    dataset=dict(
        ann_file='data/k700_val.txt', data_prefix=dict(video=data_root)))
test_dataloader = dict(
    dataset=dict(
        ann_file='data/k700_val.txt', data_prefix=dict(video=data_root)))
# Made with tools/model_converters/kinetics_head_mapping.py as in the K-400
# config, with --target-labels data/k700_labels.txt.
load_from = 'checkpoints/eva_video_k722_to_k700.pth'
train_cfg = dict(max_epochs=2)
