# Zero-shot classification of any ImageFolder-style set (one folder per
# class) with EVA CLIP. Labels follow the sorted folder names, so
# classnames.txt lists one readable name per line in that order; the
# prompts are CLIP's single 'a photo of a {}.' unless templates says
# otherwise (a mmpretrain prompt set name or format strings with {}).
#
#   python tools/test.py configs/clip/eva-clip-g14_zero-shot_imagefolder.py \
#       EVA_CLIP_CHECKPOINT --cfg-options \
#       test_dataloader.dataset.data_root=data/my_set \
#       model.classnames=data/my_set/classnames.txt
_base_ = ['eva-clip-g14_zero-shot_in1k.py']

data_root = 'data/imagefolder'
model = dict(
    classnames=data_root + '/classnames.txt',
    templates=['a photo of a {}.'])
test_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        pipeline={{_base_.test_pipeline}}))
