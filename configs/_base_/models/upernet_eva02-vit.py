# UperNet on a plain EVA-02 ViT, the official EVA-02 ADE20K segmentor
# (baaivision/EVA, EVA-02/seg: backbone/eva2.py, "eva2.py" below, and
# configs/eva02/upernet/upernet_eva02_large_24_512_slide_80k.py, "official"
# below, on BEiT's configs/_base_/models/upernet_beit.py). mmseg's own
# parts: the BEiT UperNet base, whose Feature2Pyramid neck is eva2.py's
# fpn1..fpn4 (2 deconvolutions with SyncBN and GELU between, 1
# deconvolution, identity, max-pool; eva2.py:609-623), UPerHead and the
# auxiliary FCNHead.
_base_ = ['mmseg::_base_/models/upernet_beit.py']

custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)

model = dict(
    # Crops padded to 512 x 512 with 0 (labels 255), as the official Pad
    # (crop_size = (512, 512)).
    data_preprocessor=dict(size=(512, 512)),
    backbone=dict(
        _delete_=True,
        type='eva_mm.EVAViT',
        # embed_dim 1024, depth 24, num_heads 16, mlp_ratio 4*2/3, SwiGLU
        # with sub-LN (naiveswiglu, subln), RoPE with pt_hw_seq_len=16 on
        # the patch tokens only (eva2.py:309-316), q/v biases (official).
        arch='eva02-large',
        img_size=512,  # img_size=512
        patch_size=16,  # patch_size=16 (the _p14to16 MIM weights)
        # The cls token and its position are kept (eva2.py:564-567, 686-
        # 690); no final norm (the features leave the blocks directly).
        with_cls_token=True,
        final_norm=False,
        out_type='featmap',
        out_indices=(7, 11, 15, 23),  # out_indices=[7, 11, 15, 23]
        drop_path_rate=0.2,  # drop_path_rate=0.2
        with_cp=False),  # use_checkpoint=False
    neck=dict(embed_dim=1024, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(
        in_channels=[1024] * 4,  # in_channels=[1024, 1024, 1024, 1024]
        channels=1024,  # channels=1024 (README: seg head dim 1024)
        num_classes=150),
    auxiliary_head=dict(in_channels=1024, num_classes=150),
    # Sliding 512 windows with stride 341 (official test_cfg).
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
