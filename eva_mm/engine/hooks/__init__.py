from .non_finite_loss import NonFiniteLossError, NonFiniteLossHook

__all__ = ['NonFiniteLossError', 'NonFiniteLossHook']
