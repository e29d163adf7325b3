# The EVA-01 video model (arXiv:2211.07636; official EVA-01/video code, an
# X-CLIP derivative with its text branch disabled): the image EVA-g/14
# inflated to video with tubelet 1, joint space-time attention over all
# T x 16 x 16 tokens plus cls, mean pooling + fc_norm and a linear head.
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='eva_mm.EVAViT',
        arch='giant',
        img_size=224,
        num_frames=16,
        # TUBELET_SIZE: 1 in the official configs.
        tubelet_size=1,
        # The official model is fine-tuned with FT_FRAMES 8 and run at 16:
        # its position embedding has a time axis, tiled from the image one
        # on load and resized trilinearly when the frame count changes.
        temporal_pos_embed=True,
        # USE_MEAN_POOLING: True.
        out_type='avg_featmap',
        use_fc_norm=True,
        final_norm=False,
        tuple_output=False,
        # USE_CHECKPOINT: True (activation checkpointing).
        with_cp=True,
        # fp32 islands under mixed precision: LayerNorms in fp32
        # (LayerNormWithForceFP32, EVA-01/video/models/beit.py:44-72, the
        # video model's norm_layer at :953 and clip_mae.py:225) and q.k^T
        # with its softmax in fp32 (qk_float, beit.py:135, 183-186).
        fp32_norm=True,
        fp32_attention=True,
        drop_path_rate=0.2),
    # The official head: one linear layer on the pooled features, drawn at
    # std 0.02 and then scaled by init_scale 0.001 (EVA-01/video/models/
    # beit.py:400, 453-466). mmaction2's TimeSformerHead without the scaling
    # is type='TimeSformerHead' (or init_scale=1.0).
    cls_head=dict(
        type='eva_mm.VideoLinearHead',
        num_classes=400,
        in_channels=1408,
        init_std=0.02,
        init_scale=0.001,
        dropout_ratio=0.,
        # AUG.LABEL_SMOOTH: 0.1.
        label_smooth_eps=0.1,
        # The test sums the views' softmax scores (main.py:305-306).
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        # ImageNet mean/std in RGB order, as the official video code
        # normalises (EVA-01/video/datasets/build.py:34-35), not CLIP's.
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        format_shape='NCTHW'))
