from .eva_mim_head import EVAMIMHead
from .video_head import VideoLinearHead

__all__ = ['EVAMIMHead', 'VideoLinearHead']
