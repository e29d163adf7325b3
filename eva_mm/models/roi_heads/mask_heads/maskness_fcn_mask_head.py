"""FCN mask head that rescores detections by their mask quality (maskness)."""
from typing import Any, List, Optional

import torch
import torch.nn as nn
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.utils import InstanceList
from mmengine.config import ConfigDict
from torch import Tensor

from eva_mm.registry import MODELS


@MODELS.register_module()
class MasknessFCNMaskHead(FCNMaskHead):
    """mmdet's FCN mask head with EVA's test-time mask-score calibration.

    EVA (``maskness_thresh`` of its detectron2 ``CascadeROIHeads``) replaces
    each detection's score by the box score times its *maskness*: the mean
    predicted probability over the RoI-level mask pixels (28 x 28 by
    default, before pasting into the image) whose probability exceeds
    ``maskness_thr``; a mask without such pixels gets maskness 0. The
    detections are then re-sorted by the new score. Training is unchanged.

    Works for Mask R-CNN (mask logits reach ``predict_by_feat``) and for
    Cascade Mask R-CNN (the stages' mask probabilities are averaged first and
    arrive with ``activate_map=True``).

    The mask predictor (``conv_logits``) starts as detectron2's
    ``MaskRCNNConvUpsampleHead`` predictor (EVA-01/det/detectron2/modeling/
    roi_heads/mask_head.py:265-269): normal(0, ``predictor_std``), bias 0.
    mmdet's ``FCNMaskHead`` draws it Kaiming normal (fan_out), std
    sqrt(2 / num_classes), about 0.16 for COCO's 80 classes. The convs and
    the deconvolution are initialised alike in both (detectron2's
    ``c2_msra_fill`` is Kaiming normal, fan_out, bias 0).

    Args:
        maskness_thr: Probability above which a mask pixel counts as
            foreground for the maskness (EVA: 0.5).
        rescore_by_maskness: Rescore the detections; with False the head
            predicts exactly like ``FCNMaskHead``.
        predictor_std: Std of the mask predictor's normal initialisation
            (detectron2: 0.001); ``None`` keeps mmdet's Kaiming init.
        **kwargs: ``FCNMaskHead`` arguments.
    """

    def __init__(self,
                 maskness_thr: float = 0.5,
                 rescore_by_maskness: bool = True,
                 predictor_std: Optional[float] = 0.001,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= maskness_thr < 1:
            raise ValueError(
                f'maskness_thr={maskness_thr} must be a probability in '
                '[0, 1); EVA uses 0.5.')
        if predictor_std is not None and predictor_std <= 0:
            raise ValueError(
                f'predictor_std={predictor_std} must be positive (detectron2: '
                "0.001), or None for mmdet's Kaiming initialisation.")
        self.maskness_thr = maskness_thr
        self.rescore_by_maskness = rescore_by_maskness
        self.predictor_std = predictor_std

    def init_weights(self) -> None:
        """mmdet's initialisation, then the predictor's as detectron2's."""
        super().init_weights()
        if self.predictor_std is not None:
            nn.init.normal_(self.conv_logits.weight, std=self.predictor_std)
            if self.conv_logits.bias is not None:
                nn.init.zeros_(self.conv_logits.bias)

    def maskness(self, mask_preds: Tensor, labels: Tensor,
                 activate_map: bool) -> Tensor:
        """Mean foreground probability of each detection's RoI mask.

        Args:
            mask_preds: RoI masks of shape (n, num_classes or 1, h, w),
                logits, or probabilities when ``activate_map``.
            labels: Class of each detection, shape (n, ).
            activate_map: Whether ``mask_preds`` are probabilities already.

        Returns:
            Maskness of shape (n, ), 0 for masks with no pixel above
            ``maskness_thr``.
        """
        probs = mask_preds if activate_map else mask_preds.sigmoid()
        if self.class_agnostic:
            probs = probs[:, 0]
        else:
            probs = probs[torch.arange(len(labels)), labels]
        foreground = probs > self.maskness_thr
        area = foreground.sum(dim=(1, 2))
        # A mask with no foreground has numerator 0, hence maskness 0.
        return (probs * foreground).sum(dim=(1, 2)) / area.clamp(min=1)

    def predict_by_feat(self,
                        mask_preds: List[Tensor],
                        results_list: InstanceList,
                        batch_img_metas: List[dict],
                        rcnn_test_cfg: ConfigDict,
                        rescale: bool = False,
                        activate_map: bool = False) -> InstanceList:
        """Paste the masks as FCNMaskHead does, then rescore by maskness.

        Args:
            mask_preds: Per image, RoI masks of shape (n, C, h, w).
            results_list: Per image, detections with ``bboxes``, ``labels``
                and ``scores``.
            batch_img_metas: Per image, its meta information.
            rcnn_test_cfg: The R-CNN test config (``mask_thr_binary``).
            rescale: Whether to return masks in the original image space.
            activate_map: Whether ``mask_preds`` are probabilities already
                (CascadeRoIHead's averaged stages) instead of logits.

        Returns:
            Per image, the detections with ``masks`` and, when rescoring,
            ``scores`` multiplied by the maskness and sorted descending.
        """
        if not self.rescore_by_maskness:
            return super().predict_by_feat(mask_preds, results_list,
                                           batch_img_metas, rcnn_test_cfg,
                                           rescale, activate_map)
        maskness = [
            self.maskness(preds, results.labels, activate_map)
            for preds, results in zip(mask_preds, results_list)
        ]
        results_list = super().predict_by_feat(mask_preds, results_list,
                                               batch_img_metas,
                                               rcnn_test_cfg, rescale,
                                               activate_map)
        for img_id, (results, factor) in enumerate(zip(results_list,
                                                       maskness)):
            if len(results) == 0:
                continue
            results.scores = results.scores * factor
            order = results.scores.argsort(descending=True, stable=True)
            results_list[img_id] = results[order]
        return results_list
