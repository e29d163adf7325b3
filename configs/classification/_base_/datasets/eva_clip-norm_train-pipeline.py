# What the EVA-01 image fine-tuning data bases share (EVA-01/eva/README.md,
# both stages): OpenAI CLIP mean/std, the normalisation of EVA-01's
# evaluation code (EVA-01/eva/robustness_dataset.py) and of timm's
# eva_giant_patch14_* cfgs, and the train pipeline RandomResizedCrop
# (bicubic) + flip + RandAugment rand-m9-mstd0.5-inc1 (--aa; no random
# erasing, --reprob 0.0). Each data base sets the size (224 here), the
# crop scale (--scale) and the classes.
mean = [0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255]
std = [0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255]
data_preprocessor = dict(mean=mean, std=std, to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.08, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # mmpretrain's spelling of timm's rand-m9-mstd0.5-inc1 (pad with the
    # mean, in the BGR order of the loaded image).
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(
            pad_val=[round(x) for x in mean[::-1]], interpolation='bicubic')),
    dict(type='PackInputs'),
]
