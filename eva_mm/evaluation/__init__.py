from .metrics import ClassSubsetAccuracy, ReaLAccuracy

__all__ = ['ClassSubsetAccuracy', 'ReaLAccuracy']
