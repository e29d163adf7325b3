# The EVA-01 giant Cascade Mask R-CNN of the paper's COCO and LVIS results
# (arXiv:2211.07636; official EVA-01 det config EVA-01/det/projects/ViTDet/
# configs/COCO/cascade_mask_rcnn_vitdet_eva_1536.py, "official" below). The
# ViTDet Cascade base with the EVA-g backbone, EVA's test-time soft-NMS and
# maskness-calibrated mask scores.
_base_ = ['./cascade-mask-rcnn_eva-vit_simple-fpn.py']

model = dict(
    backbone=dict(
        # embed_dim 1408, depth 40, num_heads 16, mlp_ratio 6144 / 1408.
        arch='giant',
        # Position embedding learned for this size, resized at run time for
        # other inputs; the training configs set it to their LSJ size.
        img_size=1024,
        # patch_size = 16: the patch-14 MIM weights resized to 16
        # (tools/model_converters/convert_eva.py --patch-size 16).
        patch_size=16,
        window_size=16,
        # "global attention for every 4 blocks": all blocks but 3, 7, ..., 39
        # are window blocks (window_block_indexes).
        global_block_indexes=(3, 7, 11, 15, 19, 23, 27, 31, 35, 39),
        drop_path_rate=0.6,  # "0.5 --> 0.6"
        with_cp=True,  # use_act_checkpoint = True
        freeze_patch_embed=True),  # freeze_patch_embed = True
    neck=dict(in_channels=1408),
    roi_head=dict(
        # The official evaluation's maskness_thresh=0.5: a mask's score is
        # the box score x the mean probability over its pixels above 0.5.
        # Switch off with rescore_by_maskness=False.
        mask_head=dict(maskness_thr=0.5, rescore_by_maskness=True)),
    # 1000 proposals per training image, detectron2's RPN post_nms_topk
    # (configs/common/models/mask_rcnn_fpn.py; mmdet's base keeps 2000).
    train_cfg=dict(rpn_proposal=dict(max_per_img=1000)),
    test_cfg=dict(
        rcnn=dict(
            # The official COCO evaluation command (EVA-01/det/README.md):
            # use_soft_nms=True, method="linear", iou_threshold=0.6,
            # override_score_thresh=0.0. Switch back to ViTDet's hard NMS
            # with nms=dict(type='nms', iou_threshold=0.5), score_thr=0.05.
            score_thr=0.0,
            nms=dict(type='soft_nms', iou_threshold=0.6, method='linear'),
            # With soft-NMS detectron2 returns every detection above the
            # soft-NMS min_score 1e-3, without the per-image top-k
            # (official roi_heads/fast_rcnn.py:178-197 return before
            # :200-202), and maskness rescoring sees them all.
            max_per_img=-1)))
