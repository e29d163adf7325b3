# Zero-shot ImageNet-1K classification with EVA CLIP (open_clip EVA01-g-14:
# the EVA-g/14 vision tower, CLIP-L-sized text tower). Paper
# (arXiv:2211.07636): 78.5 top-1 after 11B samples of LAION-400M.
# Prompt ensembling as CLIP's and open_clip's ImageNet evaluation: OpenAI's
# 80 templates and readable class names (mmpretrain's 'openai_imagenet' and
# 'imagenet' lists, in ImageNet's label order). Preprocessing is open_clip's
# validation transform: bicubic resize of the short edge to 224, center crop
# 224, OpenAI mean/std (the model's default data preprocessor).
#
#   python tools/test.py configs/clip/eva-clip-g14_zero-shot_in1k.py \
#       EVA_CLIP_CHECKPOINT
# with an open_clip checkpoint (open_clip training's epoch_N.pt, the output
# of tools/model_converters/eva_clip.py export, or the BAAI release
# eva_clip_psz14.pt converted by tools/model_converters/convert_eva.py
# --src-format official-clip), loaded as it is.
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/datasets/clip-eval_224px.py',
]
custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)

model = dict(
    type='eva_mm.OpenCLIPZeroShot',
    model_name='EVA01-g-14',
    # tools/test.py loads the checkpoint it is given.
    pretrained=None,
    classnames='imagenet',
    templates='openai_imagenet')

test_dataloader = dict(
    batch_size=32,
    num_workers=8,
    dataset=dict(
        type='ImageNet',
        data_root='data/imagenet',
        split='val',
        pipeline=_base_.test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_evaluator = dict(type='Accuracy', topk=(1, 5))
test_cfg = dict()
# Check the test files before evaluating; an unreadable one stops the run
# with its name (docs/bad_data.md).
default_hooks = dict(unreadable_data=dict(type='eva_mm.UnreadableDataHook'))
# Evaluation only, so no learning rate to scale: the official global batch
# is that of EVA-CLIP's training with open_clip, "41K" (EVA-01/clip/
# README.md, model card; neither the exact count nor the GPU x per-GPU x
# accumulation split is published). Recorded for reference; tools/test.py
# ignores auto_scale_lr.
auto_scale_lr = dict(base_batch_size=41_000, enable=False)
