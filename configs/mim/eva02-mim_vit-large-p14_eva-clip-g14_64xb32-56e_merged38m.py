# EVA-02-L MIM on Merged-38M: eva02_L_pt_m38m_p14 (EVA-02/asuka/README.md,
# "Pre-train eva02_L_pt_m38m_p14 on Merged-38M using 8 nodes x 8 gpus"):
# the IN-21K recipe for 56 epochs on IN-21K + ADE20K + CC12M + CC3M + COCO +
# Objects365 + OpenImages v6 images (one folder tree, labels off).
_base_ = ['./eva02-mim_vit-large-p14_eva-clip-g14_64xb32-150e_in21k.py']

data_root = 'data/merged-38m'
train_dataloader = dict(dataset=dict(data_root=data_root))
train_cfg = dict(max_epochs=56)  # README: epochs=56
