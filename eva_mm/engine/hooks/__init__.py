from .non_finite_loss import NonFiniteLossError, NonFiniteLossHook
from .unreadable_data import UnreadableDataHook

__all__ = ['NonFiniteLossError', 'NonFiniteLossHook', 'UnreadableDataHook']
