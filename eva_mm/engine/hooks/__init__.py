from .non_finite_loss import NonFiniteLossError, NonFiniteLossHook
from .official_checkpoint import OfficialCheckpointHook
from .unreadable_data import UnreadableDataHook

__all__ = [
    'NonFiniteLossError', 'NonFiniteLossHook', 'OfficialCheckpointHook',
    'UnreadableDataHook'
]
