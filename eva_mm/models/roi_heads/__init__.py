from .detectron2_cascade_roi_head import Detectron2CascadeRoIHead
from .mask_heads import MasknessFCNMaskHead
from .probability_averaging_cascade_roi_head import \
    ProbabilityAveragingCascadeRoIHead

__all__ = [
    'Detectron2CascadeRoIHead', 'MasknessFCNMaskHead',
    'ProbabilityAveragingCascadeRoIHead'
]
