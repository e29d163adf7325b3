# The EVA-01 MIM recipe with a ViT-base student (patch 14, so that its 16x16
# grid matches the CLIP ViT-L/14 teacher's at 224).
_base_ = ['./eva-mim_vit-giant-p14_clip-l14_128xb32-150e.py']

model = dict(
    # Official default init_std for the smaller students (EVA-01/eva/
    # modeling_pretrain.py:32); only the giant uses 0.015.
    init_std=0.02,
    backbone=dict(arch='base'),
    head=dict(in_channels=768))
