from .mask_heads import MasknessFCNMaskHead
from .probability_averaging_cascade_roi_head import \
    ProbabilityAveragingCascadeRoIHead

__all__ = ['MasknessFCNMaskHead', 'ProbabilityAveragingCascadeRoIHead']
