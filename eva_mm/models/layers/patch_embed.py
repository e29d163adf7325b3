"""The conv patch embedding of EVAViT, for images and video tubelets."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair


class PatchEmbed(nn.Module):
    """Non-overlapping conv patch embedding with a clear size check.

    Args:
        patch_size: Patch (kernel and stride) size.
        in_channels: Input image channels.
        embed_dims: Output token dimension.
        tubelet_size: ``None`` for images (Conv2d); for videos the temporal
            kernel and stride of a Conv3d tubelet embedding.
    """

    def __init__(self,
                 patch_size: int,
                 in_channels: int,
                 embed_dims: int,
                 tubelet_size: Optional[int] = None) -> None:
        super().__init__()
        self.patch_size = _pair(patch_size)
        self.tubelet_size = tubelet_size
        if tubelet_size is None:
            self.proj = nn.Conv2d(
                in_channels,
                embed_dims,
                kernel_size=self.patch_size,
                stride=self.patch_size)
        else:
            kernel = (tubelet_size, *self.patch_size)
            self.proj = nn.Conv3d(
                in_channels, embed_dims, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
        """Embed (B, C, H, W) images or (B, C, T, H, W) videos as tokens.

        Returns:
            Tokens (B, N, D) and their grid: (H/p, W/p) for images,
            (T/t, H/p, W/p) for videos, tokens ordered time-major.
        """
        expected = 4 if self.tubelet_size is None else 5
        if x.dim() != expected:
            raise ValueError(
                f'Expected a {expected}-D input '
                f'({"(B, C, H, W)" if expected == 4 else "(B, C, T, H, W)"})'
                f', got shape {tuple(x.shape)}.')
        if self.tubelet_size is not None and x.shape[2] % self.tubelet_size:
            raise ValueError(f'{x.shape[2]} frames is not a multiple of the '
                             f'tubelet size {self.tubelet_size}.')
        h, w = x.shape[-2:]
        ph, pw = self.patch_size
        if h % ph or w % pw:
            raise ValueError(
                f'Input size {h}x{w} is not a multiple of the patch size '
                f'{ph}x{pw}. Resize or pad the images to a multiple of '
                f'{ph}x{pw} (in OpenMMLab configs: pad_size_divisor={ph} '
                'in the data_preprocessor, or a Pad/Resize transform).')
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])
