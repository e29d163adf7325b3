# Shared pieces of the EVA-02 detection configs (official EVA-02 det code:
# EVA-02/det/detectron2/modeling/backbone/vit.py, "vit.py" below, and
# EVA-02/det/projects/ViTDet/configs/eva2_*/, "official" below). Only new
# top-level names here, so that a config can take them next to an EVA-01
# detection config as its base (mmengine refuses keys defined twice among
# bases): model=dict(backbone=_base_.eva02_det_backbone) and so on.

# EVA-02-L as ViTDet's plain backbone, as the official ViT builds it.
eva02_det_backbone = dict(
    # embed_dim 1024, depth 24, num_heads 16, mlp_ratio 4*2/3 (SwiGLU with
    # its sub-LN, vit.py:42-66, 247-252), q/v biases, 2D RoPE with the
    # pre-training grid 16 x 16 as reference (pt_hw_seq_len=16,
    # vit.py:313, 367-379): the eva02-large preset.
    arch='eva02-large',
    # patch_size = 16: the _p14to16 MIM weights (EVA-02/det/README.md).
    patch_size=16,
    # vit.py takes use_rel_pos but never uses it (vit.py:311, 384-397):
    # positions are RoPE plus the absolute pos_embed only.
    rel_pos=None,
    # model.backbone.net.window_size = 16 (eva2_coco_..._l_4attn_1024).
    window_size=16,
    # "5, 11, 17, 23 for global attention" (same config, lines 26-29).
    global_block_indexes=(5, 11, 17, 23),
    drop_path_rate=0.4,  # model.backbone.net.drop_path_rate = 0.4
    with_cp=False,  # use_act_checkpoint = False
    # EVA-02's ViT trains its patch embedding (EVA-01 froze it).
    freeze_patch_embed=False)

# The 8 global blocks of the 1536 px EVA-02-L detectors: "2, 5, 8, 11, 14,
# 17, 20, 23 for global attention" (eva2_coco_..._l_8attn_win32_1536
# _lrd0p8.py:26-29, eva2_o365_..._l_8attn_1536_lrd0p8.py:35-38).
eva02_l_global_8 = (2, 5, 8, 11, 14, 17, 20, 23)

# The 1536 px EVA-02-L detectors without Objects365
# (eva2_coco_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8.py, also the
# base of the LVIS one) on top of the 1024 px ones.
eva02_sys_model = dict(
    # Square padding to 1536 (square_pad = 1536, line 16).
    data_preprocessor=dict(pad_size_divisor=1536),
    backbone=dict(
        img_size=1536,  # img_size = 1536
        window_size=32,  # window_size = 32
        global_block_indexes=eva02_l_global_8,
        with_cp=True),  # use_act_checkpoint = True
    # maskness_thresh=0.5 in the official evaluation commands
    # (EVA-02/det/README.md).
    roi_head=dict(mask_head=dict(rescore_by_maskness=True)))
# Their test (the same commands): soft-NMS (use_soft_nms=True,
# method=linear, iou_threshold=0.6), all detections kept; the COCO
# commands add override_score_thresh=0.0.
eva02_soft_nms_rcnn = dict(
    nms=dict(_delete_=True, type='soft_nms', iou_threshold=0.6,
             method='linear'),
    max_per_img=-1)
# The fields of the LSJ transforms' sizes (RandomResize, RandomCrop,
# Resize), set by the 1536 px configs.
eva02_lsj_sizes = ('scale', 'crop_size')

# The fine-tuning that follows Objects365 (eva2_o365_to_coco/
# eva2_o365_to_coco_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8.py,
# "o365_to_coco" below, also the base of eva2_o365_to_lvis): a constant lr
# after a linear warm-up from 0.001 over 1% of the iterations
# (WarmupParamScheduler(CosineParamScheduler(1, 1), warmup_length=0.01,
# warmup_factor=0.001), lines 45-52); each config sets the warm-up's end.
eva02_o365_pre_param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0)
]
# train.model_ema: decay 0.9999 over parameters and buffers
# (detectron2/modeling/ema.py:76-79, 122-135), evaluated with the EMA
# weights (use_ema_weights_for_eval_only=True, EVA-02/det/README.md).
# mmengine's momentum is 1 - decay.
eva02_ema_hook = dict(
    type='EMAHook',
    ema_type='ExponentialMovingAverage',
    momentum=1e-4,
    update_buffers=True,
    priority=49)
