from .layer_decay_constructor import (DEFAULT_NO_DECAY_NAMES,
                                      LayerDecayOptimWrapperConstructor)

__all__ = ['DEFAULT_NO_DECAY_NAMES', 'LayerDecayOptimWrapperConstructor']
