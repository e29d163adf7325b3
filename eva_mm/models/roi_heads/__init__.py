from .mask_heads import MasknessFCNMaskHead

__all__ = ['MasknessFCNMaskHead']
