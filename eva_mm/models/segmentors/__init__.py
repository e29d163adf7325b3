from .mask2former_encoder_decoder import Mask2FormerEncoderDecoder

__all__ = ['Mask2FormerEncoderDecoder']
