from .checkpoint import (CheckpointError, CheckpointMismatchError, LoadResult,
                         convert_official_eva, convert_timm_eva,
                         load_backbone_checkpoint, load_state_dict_file,
                         resize_checkpoint, to_image_classifier,
                         unwrap_state_dict)

__all__ = [
    'CheckpointError', 'CheckpointMismatchError', 'LoadResult',
    'convert_official_eva', 'convert_timm_eva', 'load_backbone_checkpoint',
    'load_state_dict_file', 'resize_checkpoint', 'to_image_classifier',
    'unwrap_state_dict'
]
