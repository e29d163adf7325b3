from .hooks import (NonFiniteLossError, NonFiniteLossHook,
                    UnreadableDataHook)
from .optim_wrapper import AutocastOptimWrapper
from .optimizers import LayerDecayOptimWrapperConstructor
from .safe_checkpoint import (register_mmengine_safe_globals,
                              setup_checkpoint_loading)
from .strategies import DeepSpeedStrategy

__all__ = [
    'AutocastOptimWrapper', 'DeepSpeedStrategy',
    'LayerDecayOptimWrapperConstructor', 'NonFiniteLossError',
    'NonFiniteLossHook', 'UnreadableDataHook',
    'register_mmengine_safe_globals', 'setup_checkpoint_loading'
]
