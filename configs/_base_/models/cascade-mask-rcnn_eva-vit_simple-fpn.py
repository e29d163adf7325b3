# Cascade Mask R-CNN on a plain EVA ViT, the ViTDet recipe that EVA
# (arXiv:2211.07636) uses for COCO and LVIS: the last ViT feature map only,
# window attention with a few global blocks, decomposed relative positions and
# a simple feature pyramid. Heads and training settings are mmdet's Cascade
# Mask R-CNN; the box and mask heads get convs with channels-first LayerNorm,
# as in ViTDet.
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
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))


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
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        # Test scores are the mean of the stages' probabilities, as in
        # detectron2's CascadeROIHeads (EVA's code), not mmdet's mean logits.
        type='eva_mm.ProbabilityAveragingCascadeRoIHead',
        bbox_head=[
            _cascade_stage([0.1, 0.1, 0.2, 0.2]),
            _cascade_stage([0.05, 0.05, 0.1, 0.1]),
            _cascade_stage([0.033, 0.033, 0.067, 0.067]),
        ],
        mask_head=dict(norm_cfg=norm_cfg)))
