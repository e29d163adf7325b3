from .hooks import NonFiniteLossError, NonFiniteLossHook
from .optim_wrapper import AutocastOptimWrapper
from .optimizers import LayerDecayOptimWrapperConstructor
from .safe_checkpoint import register_mmengine_safe_globals
from .strategies import DeepSpeedStrategy

# Done at import so that every entry point that imports eva_mm (tools/*.py,
# custom_imports in a config) can resume and load mmengine checkpoints.
register_mmengine_safe_globals()

__all__ = [
    'AutocastOptimWrapper', 'DeepSpeedStrategy',
    'LayerDecayOptimWrapperConstructor', 'NonFiniteLossError',
    'NonFiniteLossHook',
    'register_mmengine_safe_globals'
]
