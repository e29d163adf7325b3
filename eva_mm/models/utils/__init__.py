from .checkpoint import (CheckpointError, CheckpointMismatchError, LoadResult,
                         convert_official_eva, convert_timm_eva,
                         load_backbone_checkpoint, load_state_dict_file,
                         resize_checkpoint, to_image_classifier,
                         unwrap_state_dict)
from .open_clip_convert import (copy_text_tower, eva_vit_to_open_clip,
                                open_clip_to_eva_vit,
                                to_open_clip_vision_transformer)

__all__ = [
    'CheckpointError', 'CheckpointMismatchError', 'LoadResult',
    'copy_text_tower', 'eva_vit_to_open_clip', 'open_clip_to_eva_vit',
    'convert_official_eva', 'convert_timm_eva', 'load_backbone_checkpoint',
    'load_state_dict_file', 'resize_checkpoint', 'to_image_classifier',
    'to_open_clip_vision_transformer', 'unwrap_state_dict'
]
