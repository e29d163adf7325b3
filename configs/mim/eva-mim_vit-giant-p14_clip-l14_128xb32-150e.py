# The EVA-01 ViT-g/14 MIM recipe on mmengine's plain Runner (DDP). Use
# `tools/train.py --amp` for mixed precision: fp16 with dynamic loss scaling on
# GPU, bf16 autocast on CPU.
_base_ = ['./_base_/eva-mim_vit-giant-p14_recipe.py']
