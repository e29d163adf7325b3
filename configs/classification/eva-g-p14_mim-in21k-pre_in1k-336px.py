# EVA-01 stage 2: ImageNet-1K fine-tuning at 336 px, from the IN-21K
# intermediate fine-tuned model, 10 epochs, EMA of the weights; the paper's
# 89.6 top-1 (arXiv:2211.07636; the official EMA checkpoint
# eva_21k_1k_336px_psz14_ema_89p6.pt). The recipe, every number with its
# source, is the base's.
_base_ = ['_base_/eva-g-p14_in1k-336px_finetune.py']
