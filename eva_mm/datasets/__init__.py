from .demo_ade import generate_demo_ade
from .demo_shapes import CLASSES as DEMO_SHAPES_CLASSES
from .demo_shapes import PALETTE as DEMO_SHAPES_PALETTE
from .demo_shapes import generate_demo_shapes
from .imagenet_v2 import ImageNetV2
from .lvis import LVISV1Dataset
from .mask_generator import EVABlockMaskGenerator
from .samplers import (RepeatFactorSampler,
                       repeat_factors_from_category_frequency)
from .video import (RobustVideoDataset, VideoDecode, VideoInit,
                    VideoReadError)
from .video_transforms import ColorJitter, RandomGrayscale, TSNSample

__all__ = [
    'ColorJitter', 'DEMO_SHAPES_CLASSES', 'DEMO_SHAPES_PALETTE',
    'EVABlockMaskGenerator', 'ImageNetV2',
    'LVISV1Dataset',
    'RandomGrayscale', 'RepeatFactorSampler', 'RobustVideoDataset',
    'TSNSample',
    'VideoDecode', 'VideoInit', 'VideoReadError', 'generate_demo_ade',
    'generate_demo_shapes', 'repeat_factors_from_category_frequency'
]
