from .non_finite_loss import NonFiniteLossError, NonFiniteLossHook
from .official_checkpoint import OfficialCheckpointHook

__all__ = ['NonFiniteLossError', 'NonFiniteLossHook', 'OfficialCheckpointHook']
