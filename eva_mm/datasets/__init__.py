from .imagenet_v2 import ImageNetV2
from .lsj_crop import Detectron2RandomCrop
from .lvis import LVISV1Dataset
from .mask_generator import EVABlockMaskGenerator
from .samplers import (RepeatFactorSampler,
                       repeat_factors_from_category_frequency)
from .unreadable import GuardedPipeline, UnreadableDataError
from .video_colour import ColorJitter, RandomGrayscale
from .video_decoding import VideoDecode, VideoInit, VideoReadError
from .video_sampling import TSNSample

__all__ = [
    'ColorJitter', 'Detectron2RandomCrop', 'EVABlockMaskGenerator',
    'GuardedPipeline', 'ImageNetV2', 'LVISV1Dataset', 'RandomGrayscale',
    'RepeatFactorSampler', 'TSNSample', 'UnreadableDataError', 'VideoDecode',
    'VideoInit', 'VideoReadError', 'repeat_factors_from_category_frequency'
]
