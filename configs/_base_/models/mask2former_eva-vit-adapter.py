# Mask2Former on EVA-g with a ViT-Adapter: the EVA-01 semantic segmentation
# model (arXiv:2211.07636, Sec. 4.2). The numbers are those of the official
# configs (baaivision/EVA, EVA-01/seg/configs/coco_stuff164k/
# eva_mask2former_896_60k_cocostuff164k_ss.py, "EVA config" below), in
# mmseg 1.x / mmdet 3.x syntax: mmseg's EncoderDecoder (made safe for
# Mask2Former's sliding-window inference) and Mask2FormerHead, whose pixel
# decoder and transformer decoder are mmdet's. 150 classes (ADE20K); the
# COCO-Stuff configs set 171.
custom_imports = dict(
    imports=['eva_mm', 'mmdet.models'], allow_failed_imports=False)

num_classes = 150
embed_dims = 1408  # EVA-g width (EVA config: embed_dim)
channels = 1024  # EVA config: feat_channels / out_channels
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # EVA config: img_norm_cfg (ImageNet mean / std, RGB).
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    # Training crops are padded to 896 (EVA config: crop_size); test images
    # are not padded (the test pipeline resizes them to a multiple of 32),
    # and slide inference cuts them into 896 windows.
    size=(896, 896))
# The FFN of the pixel decoder's and the transformer decoder's layers, and
# the transformer decoder's self- and cross-attention (the same settings);
# deleted below, so they are not config keys.
_ffn_cfg = dict(
    embed_dims=channels,
    feedforward_channels=4096,  # EVA config
    num_fcs=2,
    ffn_drop=0.0,
    act_cfg=dict(type='ReLU', inplace=True))
_decoder_attn_cfg = dict(
    embed_dims=channels,
    num_heads=32,  # EVA config: MultiheadAttention heads
    attn_drop=0.0,
    proj_drop=0.0,
    dropout_layer=None,
    batch_first=True)
model = dict(
    type='eva_mm.Mask2FormerEncoderDecoder',
    data_preprocessor=data_preprocessor,
    # EVA: the semantic map softmax(classes) x sigmoid(masks) is computed at
    # the 1/4 resolution of the mask features and the probabilities are
    # resized to the window afterwards (official mmseg_custom/models/
    # decode_heads/mask2former_head.py:576-578 and segmentors/
    # encoder_decoder_mask2former.py:75); False is mmseg 1.2.2, which
    # upsamples the mask logits first.
    semantic_at_mask_resolution=True,
    # EVA config: ffn_cfgs with_cp=True (activation checkpointing) in the
    # pixel decoder's and the transformer decoder's FFNs.
    head_ffn_with_cp=True,
    backbone=dict(
        type='eva_mm.EVAViTAdapter',
        # EVA config: embed_dim=1408, depth=40, num_heads=16,
        # mlp_ratio=6144/1408: the 'giant' preset, with patch 16 (the
        # checkpoint's 14 x 14 kernel resized to 16 x 16, "eva_psz14to16").
        arch='giant',
        patch_size=16,
        img_size=896,  # EVA config: img_size
        with_cls_token=True,  # EVA's ViT keeps its cls token
        qkv_bias=True,  # EVA config: qkv_bias
        use_abs_pos_embed=True,  # EVA config: use_abs_pos_emb
        rel_pos=None,  # EVA config: use_rel_pos_bias=False
        layer_scale_init_value=0.,  # EVA config: init_values=None
        drop_path_rate=0.5,  # EVA config: drop_path_rate
        with_cp=True,  # EVA config: with_cp (activation checkpointing)
        conv_inplane=64,  # EVA config: conv_inplane
        n_points=4,  # EVA config: n_points
        deform_num_heads=16,  # EVA config: deform_num_heads
        cffn_ratio=0.25,  # EVA config: cffn_ratio
        deform_ratio=0.5,  # EVA config: deform_ratio
        # EVA config: interaction_indexes, 4 equal ranges of the 40 blocks.
        interaction_indexes=[[0, 9], [10, 19], [20, 29], [30, 39]],
        # Official SyncBN in the spatial prior and output norms; mmengine's
        # runner turns it into BN when training is not distributed.
        norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(
        type='Mask2FormerHead',
        in_channels=[embed_dims] * 4,
        strides=[4, 8, 16, 32],
        feat_channels=channels,
        out_channels=channels,
        num_classes=num_classes,
        num_queries=200,  # EVA config: num_queries
        num_transformer_feat_level=3,
        align_corners=False,
        pixel_decoder=dict(
            type='mmdet.MSDeformAttnPixelDecoder',
            num_outs=3,  # EVA config: num_outs (3 levels)
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=6,  # EVA config: encoder num_layers
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=channels,
                        num_heads=32,  # EVA config: MSDeformAttn num_heads
                        num_levels=3,  # EVA config: num_levels
                        num_points=4,  # EVA config: num_points
                        im2col_step=64,
                        dropout=0.0,
                        batch_first=True,
                        norm_cfg=None,
                        init_cfg=None),
                    ffn_cfg=_ffn_cfg),
                init_cfg=None),
            # EVA config: SinePositionalEncoding num_feats=512 (= 1024 / 2).
            positional_encoding=dict(num_feats=channels // 2, normalize=True),
            init_cfg=None),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=channels // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=8,  # EVA config: transformer_decoder num_layers
            layer_cfg=dict(
                self_attn_cfg=_decoder_attn_cfg,
                cross_attn_cfg=_decoder_attn_cfg,
                ffn_cfg=dict(_ffn_cfg, dropout_layer=None,
                             add_identity=True)),
            init_cfg=None),
        # Losses, matching costs and point sampling: the Mask2Former values
        # of the EVA config's base (ViT-Adapter's mask2former_beit.py), the
        # same as mmseg's own Mask2Former configs.
        loss_cls=dict(
            type='mmdet.CrossEntropyLoss',
            use_sigmoid=False,
            loss_weight=2.0,
            reduction='mean',
            class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(
            type='mmdet.CrossEntropyLoss',
            use_sigmoid=True,
            reduction='mean',
            loss_weight=5.0),
        loss_dice=dict(
            type='mmdet.DiceLoss',
            use_sigmoid=True,
            activate=True,
            reduction='mean',
            naive_dice=True,
            eps=1.0,
            loss_weight=5.0),
        train_cfg=dict(
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='mmdet.HungarianAssigner',
                match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=2.0),
                    dict(
                        type='mmdet.CrossEntropyLossCost',
                        weight=5.0,
                        use_sigmoid=True),
                    dict(
                        type='mmdet.DiceCost',
                        weight=5.0,
                        pred_act=True,
                        eps=1.0)
                ]),
            sampler=dict(type='mmdet.MaskPseudoSampler'))),
    train_cfg=dict(),
    # EVA config: test_cfg mode='slide', crop_size=(896, 896),
    # stride=(512, 512).
    test_cfg=dict(mode='slide', crop_size=(896, 896), stride=(512, 512)))
del _ffn_cfg, _decoder_attn_cfg
# EVA config's base: find_unused_parameters is commented out (official
# seg/configs/_base_/models/mask2former_beit.py, last line), so DDP runs
# with its default, False: every parameter gets a gradient each step.
find_unused_parameters = False
