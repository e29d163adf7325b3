from .adapter import (ConvFFN, Extractor, Injector, InteractionBlock,
                      SpatialPriorModule, deform_inputs)
from .attention import EVAAttention, TokenPositions
from .norm import LayerNorm
from .patch_embed import PatchEmbed
from .pos_embed import (resize_patch_kernel, resize_pos_embed, resize_rel_pos,
                        resize_rel_pos_bias_table)
from .transformer import EVABlock, window_partition, window_unpartition

__all__ = [
    'ConvFFN', 'Extractor', 'Injector', 'InteractionBlock',
    'SpatialPriorModule', 'deform_inputs',
    'EVAAttention', 'EVABlock', 'LayerNorm', 'PatchEmbed', 'TokenPositions',
    'resize_patch_kernel', 'resize_pos_embed', 'resize_rel_pos',
    'resize_rel_pos_bias_table', 'window_partition', 'window_unpartition'
]
