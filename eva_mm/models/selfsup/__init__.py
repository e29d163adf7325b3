from .eva_mim import EVAMIM

__all__ = ['EVAMIM']
