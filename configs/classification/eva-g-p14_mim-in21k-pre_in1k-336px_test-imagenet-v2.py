# ImageNet-V2 matched-frequency (Recht et al., 2019); EVA-g 336 px: 81.6
# top-1 (arXiv:2211.07636; 81.570 in EVA-01/eva/README.md). Class
# folders are named 0..999 by ImageNet-1K label, hence eva_mm.ImageNetV2.
# Top-1/top-5 Accuracy, as ImageNet-1K val.
_base_ = ['_base_/eva-g-p14_in1k-336px_test-folder.py']

test_dataloader = dict(
    dataset=dict(
        type='eva_mm.ImageNetV2',
        data_root='data/imagenet-v2/ImageNetV2-matched-frequency'))
