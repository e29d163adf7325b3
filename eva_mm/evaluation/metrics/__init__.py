from .imagenet_variants import ClassSubsetAccuracy, ReaLAccuracy

__all__ = ['ClassSubsetAccuracy', 'ReaLAccuracy']
