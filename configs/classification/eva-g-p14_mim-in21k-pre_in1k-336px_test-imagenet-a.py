# ImageNet-A (Hendrycks et al., 2021): 200 ImageNet-1K classes, so the
# 1000-way scores are cut down to those 200 classes (--robust_test
# 'imagenet_a', --nb_classes 200 in EVA-01/eva/README.md); EVA-g 336 px:
# 86.2 top-1 (arXiv:2211.07636; 86.154 in the README).
_base_ = ['_base_/eva-g-p14_in1k-336px_test-folder.py']

# One folder per WordNet id; labels follow the sorted folders.
test_dataloader = dict(dataset=dict(data_root='data/imagenet-a'))
# The model's 1000 classes in output order are the sorted WordNet-id folders
# of ImageNet-1K train/ (or give a text file with one id per line).
test_evaluator = dict(
    type='eva_mm.ClassSubsetAccuracy',
    superset_classes='data/imagenet/train',
    topk=(1, 5))
