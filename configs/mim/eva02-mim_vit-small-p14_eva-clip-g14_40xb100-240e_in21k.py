# EVA-02-S MIM on IN-21K: eva02_S_pt_in21k_p14 (EVA-02/asuka/README.md,
# "Pre-train eva02_S_pt_in21k_p14 on IN-21K using 5 nodes x 8 gpus"): the
# tiny recipe (batch 4000, lr 3e-3, 240 epochs, dpr 0.0) with the S student.
_base_ = ['./eva02-mim_vit-tiny-p14_eva-clip-g14_40xb100-240e_in21k.py']

model = dict(backbone=dict(arch='eva02-small'), head=dict(in_channels=384))
