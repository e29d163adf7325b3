# A test set stored as one folder per class, labels following the sorted
# folders (CustomDataset, or a subclass given as type): the variant configs
# set data_root.
_base_ = ['./eva-g-p14_in1k-336px_test.py']

test_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        pipeline={{_base_.test_pipeline}}))
