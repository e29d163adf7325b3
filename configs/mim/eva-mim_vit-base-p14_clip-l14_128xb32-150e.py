# The EVA-01 MIM recipe with a ViT-base student (patch 14, so that its 16x16
# grid matches the CLIP ViT-L/14 teacher's at 224).
_base_ = ['./eva-mim_vit-giant-p14_clip-l14_128xb32-150e.py']

model = dict(
    backbone=dict(arch='base'),
    head=dict(in_channels=768))
