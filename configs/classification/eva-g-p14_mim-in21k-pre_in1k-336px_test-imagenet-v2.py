# ImageNet-V2 matched-frequency (Recht et al., 2019); EVA-g 336 px: 81.6
# top-1 (arXiv:2211.07636; 81.570 in EVA-01/eva/README.md). Class
# folders are named 0..999 by ImageNet-1K label, hence eva_mm.ImageNetV2.
_base_ = ['_base_/eva-g-p14_in1k-336px_test.py']

test_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='eva_mm.ImageNetV2',
        data_root='data/imagenet-v2/ImageNetV2-matched-frequency',
        pipeline={{_base_.test_pipeline}}))
test_evaluator = dict(type='Accuracy', topk=(1, 5))
