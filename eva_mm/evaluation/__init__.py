from .metrics import ClassSubsetAccuracy, LVISMetric, ReaLAccuracy

__all__ = ['ClassSubsetAccuracy', 'LVISMetric', 'ReaLAccuracy']
