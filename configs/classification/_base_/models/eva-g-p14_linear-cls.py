# EVA-01 giant classifier (arXiv:2211.07636): EVAViT-g/14, mean pooling of
# the patch tokens, a LayerNorm (fc_norm) and one linear layer, as the
# official EVA-01 fine-tuning model (use_mean_pooling=True: no final norm,
# fc_norm after pooling) and timm's eva_giant_patch14_* (global_pool='avg').
#
# cls-token pooling instead: backbone=dict(out_type='cls_token',
# final_norm=True, use_fc_norm=False).
custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='eva_mm.EVAViT',
        # 40 blocks, width 1408, MLP 6144, 16 heads, patch 14 (paper Table 1).
        arch='giant',
        img_size=224,
        patch_size=14,
        out_type='avg_featmap',
        final_norm=False,
        use_fc_norm=True,
        # Official EVA-01 classification recipes: --drop_path 0.4 for both
        # the IN-21K and the IN-1K stage (EVA-01/eva/README.md).
        drop_path_rate=0.4,
        # The patch embedding stays frozen during fine-tuning, as the issue
        # states the official code does by default (not re-checked against
        # EVA-01/eva/modeling_finetune.py here).
        freeze_patch_embed=True,
        # LayerNormWithForceFP32 in the official eva_g_patch14 model; only
        # matters under mixed precision.
        fp32_norm=True,
        # --use_checkpoint in both official fine-tuning commands.
        with_cp=True),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1408,
        # timm's LabelSmoothingCrossEntropy is mode='original':
        # (1 - eps) * one_hot + eps / num_classes. Each stage sets eps.
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        # BEiT-style heads start tiny: trunc-normal std 0.02 scaled by
        # init_scale 0.001 (the default of the BEiT/EVA fine-tuning model).
        init_cfg=dict(type='TruncNormal', layer='Linear', std=2e-5, bias=0.)))
