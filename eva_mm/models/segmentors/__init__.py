from .mask2former_encoder_decoder import Mask2FormerEncoderDecoder
from .pad_short_side_tta import PadShortSideSegTTAModel

__all__ = ['Mask2FormerEncoderDecoder', 'PadShortSideSegTTAModel']
