from .imagenet_variants import ClassSubsetAccuracy, ReaLAccuracy
from .lvis_metric import LVISMetric

__all__ = ['ClassSubsetAccuracy', 'LVISMetric', 'ReaLAccuracy']
