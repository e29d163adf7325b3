# ImageNet-ReaL (Beyer et al., 2020): the ImageNet-1K val images scored
# against the re-assessed label sets of real.json (from
# github.com/google-research/reassessed-imagenet); EVA-g 336 px: 90.8 top-1
# (arXiv:2211.07636; 90.828 in EVA-01/eva/README.md).
_base_ = ['_base_/eva-g-p14_in1k-336px_test.py']

test_evaluator = dict(
    type='eva_mm.ReaLAccuracy',
    real_labels='data/imagenet/real.json',
    topk=(1, 5))
