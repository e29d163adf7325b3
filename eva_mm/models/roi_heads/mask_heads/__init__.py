from .maskness_fcn_mask_head import MasknessFCNMaskHead

__all__ = ['MasknessFCNMaskHead']
