# Evaluation-only settings shared by the ImageNet-1K variant configs: the
# 336 px EVA-g classifier, weights from the checkpoint given to
# tools/test.py (an eva_mm training run, or an official / timm classifier
# converted with tools/model_converters/convert_eva.py --classifier). The
# official evaluation commands (EVA-01/eva/README.md) use --input_size 336
# and --crop_pct 1.0: resize the short edge to 336, center-crop 336.
_base_ = ['./eva-g-p14_in1k-336px_finetune.py']

# Nothing is loaded at build time; tools/test.py loads the checkpoint.
model = dict(backbone=dict(init_cfg=None))
test_pipeline = {{_base_.test_pipeline}}
