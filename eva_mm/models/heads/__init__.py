from .eva_mim_head import EVAMIMHead

__all__ = ['EVAMIMHead']
