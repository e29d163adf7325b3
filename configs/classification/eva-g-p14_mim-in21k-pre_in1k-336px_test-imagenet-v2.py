# ImageNet-V2 matched-frequency (Recht et al., 2019); EVA-g 336 px: 81.6
# top-1 (arXiv:2211.07636; 81.570 in EVA-01/eva/README.md). Class
# folders are named 0..999 by ImageNet-1K label, hence eva_mm.ImageNetV2.
# Top-1/top-5 Accuracy, as ImageNet-1K val.
_base_ = ['_base_/eva-g-p14_in1k-336px_test-folder.py']

# The official ImageNet-V2 evaluation has its own transform
# (EVA-01/eva/robustness_dataset.py:39-44): torchvision Resize(336), whose
# default interpolation is bilinear (the ImageNet-1K evaluation resizes
# bicubic, datasets.py:246), CenterCrop(336), CLIP mean/std.
test_pipeline = [
    dict(t, interpolation='bilinear') if t['type'] == 'ResizeEdge' else t
    for t in _base_.test_pipeline
]
test_dataloader = dict(
    dataset=dict(
        type='eva_mm.ImageNetV2',
        data_root='data/imagenet-v2/ImageNetV2-matched-frequency',
        pipeline=test_pipeline))
