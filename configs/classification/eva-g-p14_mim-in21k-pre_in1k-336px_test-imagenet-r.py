# ImageNet-R (Hendrycks et al., 2021): 200 ImageNet-1K classes, so the
# 1000-way scores are cut down to those 200 classes (--robust_test
# 'imagenet_r', --nb_classes 200 in EVA-01/eva/README.md); EVA-g 336 px:
# 88.3 top-1 (arXiv:2211.07636; 88.283 in the README). Evaluated as
# ImageNet-A: one folder per WordNet id, scores cut to those classes.
_base_ = ['./eva-g-p14_mim-in21k-pre_in1k-336px_test-imagenet-a.py']

test_dataloader = dict(dataset=dict(data_root='data/imagenet-r'))
