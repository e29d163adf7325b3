# ImageNet-21K (21841 classes, one folder per class) for EVA-01's
# intermediate fine-tuning at 224 px (EVA-01/eva/README.md: --data_set
# image_folder, --nb_classes 21841, --input_size 224, --scale 0.5 1.0,
# --reprob 0.0, --disable_eval_during_finetuning).
_base_ = ['./eva_clip-norm_train-pipeline.py']

img_size = 224
data_preprocessor = dict(num_classes=21841)
# The IN-21K command passes no --aa: this assumes the default of the
# BEiT-derived run_class_finetuning.py, rand-m9-mstd0.5-inc1 (not re-checked
# in EVA-01's copy of the script), as the shared pipeline has.
train_pipeline = [
    dict(t, crop_ratio_range=(0.5, 1.0)) if t['type'] == 'RandomResizedCrop'
    else t for t in _base_.train_pipeline
]

train_dataloader = dict(
    # Official global batch 4096 = 8 nodes x 8 GPUs x 64 per GPU x 1
    # accumulation step (EVA-01/eva/README.md: total_bsz = 8*8*64,
    # update_freq=1).
    batch_size=64,
    num_workers=8,
    dataset=dict(
        type='CustomDataset',
        data_root='data/imagenet21k',
        data_prefix='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
# The official run does not evaluate during IN-21K fine-tuning.
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
