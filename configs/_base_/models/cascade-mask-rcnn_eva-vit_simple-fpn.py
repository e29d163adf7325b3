# Cascade Mask R-CNN on a plain EVA ViT, the ViTDet recipe that EVA
# (arXiv:2211.07636) uses for COCO and LVIS: the last ViT feature map only,
# window attention with a few global blocks, decomposed relative positions and
# a simple feature pyramid. The heads are mmdet's Cascade Mask R-CNN parts
# (box and mask heads with channels-first LayerNorm convs, as ViTDet), put
# together and trained as EVA's detectron2 code does ("official" below:
# EVA-01/det/detectron2/modeling/...): eva_mm.Detectron2CascadeRoIHead, L1
# box losses, every anchor trained. mmdet's own cascade is one switch away:
# roi_head.type='CascadeRoIHead', stage_loss_weights=[1, 0.5, 0.25],
# RandomSampler in every stage (mmdet's cascade-mask-rcnn_r50_fpn.py).
_base_ = ['mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py']

custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)

norm_cfg = dict(type='eva_mm.LN2d', eps=1e-6)


def _cascade_stage(target_stds):
    """A cascade stage: 4 convs and an fc shared by class and box (ViTDet)."""
    return dict(
        type='Shared4Conv1FCBBoxHead',
        in_channels=256,
        conv_out_channels=256,
        fc_out_channels=1024,
        norm_cfg=norm_cfg,
        roi_feat_size=7,
        num_classes=80,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0., 0., 0., 0.],
            target_stds=target_stds),
        reg_class_agnostic=True,
        loss_cls=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        # smooth_l1_beta = 0 (official roi_heads/fast_rcnn.py:231 default,
        # ViTDet's configs keep it): the L1 loss.
        loss_bbox=dict(type='L1Loss', loss_weight=1.0))


def _refined_stage(iou):
    """Stages 2-3: every refined box, matched at ``iou``, none sampled."""
    return dict(
        # Matcher([iou], [0, 1], allow_low_quality_matches=False)
        # (official cascade_rcnn.py:134).
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=iou,
            neg_iou_thr=iou,
            min_pos_iou=iou,
            match_low_quality=False,
            ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        # Read by mmdet's CascadeRoIHead (a mask head per stage) only.
        mask_size=28,
        pos_weight=-1,
        debug=False)


model = dict(
    # ViTDet trains on fixed 1024x1024 crops; a divisor of 32 fits any input
    # to the patch grid and the pyramid.
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='eva_mm.EVAViT',
        arch='base',
        img_size=1024,
        patch_size=16,
        out_type='featmap',
        with_cls_token=False,
        final_norm=False,
        rel_pos='decomposed',
        window_size=14,
        # ViT-B: one global block at the end of each quarter (ViTDet).
        global_block_indexes=(2, 5, 8, 11),
        drop_path_rate=0.1,
        with_cp=False),
    neck=dict(
        _delete_=True,
        type='eva_mm.SimpleFPN',
        in_channels=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(
        num_convs=2,
        # smooth_l1_beta = 0 in the RPN too (official proposal_generator/
        # rpn.py:204): the L1 loss.
        loss_bbox=dict(_delete_=True, type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        # detectron2's CascadeROIHeads: stages 2-3 train on every refined
        # box, one mask head trained on the stage-1 samples, the stage
        # losses added (weight 1) with the box features' gradient divided by
        # 3, and the mean of the stages' probabilities at test.
        type='eva_mm.Detectron2CascadeRoIHead',
        stage_loss_weights=[1.0, 1.0, 1.0],
        bbox_head=[
            # BBOX_REG_WEIGHTS (10, 10, 5, 5), (20, 20, 10, 10),
            # (30, 30, 15, 15) (detectron2 config defaults.py): the stds are
            # their inverses.
            _cascade_stage([0.1, 0.1, 0.2, 0.2]),
            _cascade_stage([0.05, 0.05, 0.1, 0.1]),
            _cascade_stage([1 / 30, 1 / 30, 1 / 15, 1 / 15]),
        ],
        # One mask head (a dict), not one per stage. eva_mm's FCN mask head
        # for detectron2's predictor init, normal(0, 0.001) with zero bias
        # (official roi_heads/mask_head.py:265-269; mmdet's FCNMaskHead
        # draws it Kaiming normal); ViTDet has no maskness rescoring.
        mask_head=dict(
            type='eva_mm.MasknessFCNMaskHead',
            norm_cfg=norm_cfg,
            predictor_std=0.001,
            rescore_by_maskness=False)),
    train_cfg=dict(
        rpn=dict(
            # Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
            # (official rpn.py): each ground truth's best anchors are
            # positive whatever their IoU (min_pos_iou 0).
            assigner=dict(min_pos_iou=0.0),
            # anchor_boundary_thresh=-1 (official rpn.py:201, 345): anchors
            # crossing the image border are trained too.
            allowed_border=-1),
        rcnn=[
            # Stage 1 keeps mmdet's base: 512 RoIs at 25% positives with the
            # ground truth added (ROI_HEADS defaults, proposal_append_gt).
            _base_.model.train_cfg.rcnn[0],
            _refined_stage(0.6),
            _refined_stage(0.7),
        ]))
