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
        drop_path_rate=0.2),
    cls_head=dict(
        type='TimeSformerHead',
        num_classes=400,
        in_channels=1408,
        dropout_ratio=0.,
        # AUG.LABEL_SMOOTH: 0.1.
        label_smooth_eps=0.1,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        # CLIP's normalisation, which the X-CLIP-based official code uses.
        mean=[122.7709383, 116.7460125, 104.09373615],
        std=[68.5005327, 66.6321579, 70.32316305],
        format_shape='NCTHW'))
