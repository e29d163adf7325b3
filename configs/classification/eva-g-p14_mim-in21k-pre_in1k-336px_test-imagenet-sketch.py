# ImageNet-Sketch (Wang et al., 2019): all 1000 classes, one folder per
# WordNet id, so the sorted folders are the ImageNet-1K label order; EVA-g
# 336 px: 67.7 top-1 (arXiv:2211.07636; 67.724 in
# EVA-01/eva/README.md). Top-1/top-5 Accuracy, as ImageNet-1K val.
_base_ = ['_base_/eva-g-p14_in1k-336px_test-folder.py']

test_dataloader = dict(dataset=dict(data_root='data/imagenet-sketch/sketch'))
