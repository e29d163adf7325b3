"""Single-image inference for eva_mm detectors and segmentors."""
from .inference import class_names, draw_result, inference, result_to_json
from .model_loading import init_model, task_scope

__all__ = [
    'class_names', 'draw_result', 'inference', 'init_model',
    'result_to_json', 'task_scope'
]
