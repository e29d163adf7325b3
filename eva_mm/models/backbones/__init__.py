from .eva_vit import EVAViT
from .eva_vit_adapter import EVAViTAdapter

__all__ = ['EVAViT', 'EVAViTAdapter']
