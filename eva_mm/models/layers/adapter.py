"""The ViT-Adapter parts (Chen et al., arXiv:2205.08534) of EVA segmentation.

A convolutional spatial prior module turns the image into features at 1/8,
1/16 and 1/32 (plus 1/4); interaction blocks then exchange information
between those features and the ViT's patch tokens through multi-scale
deformable attention (mmcv's ``MultiScaleDeformableAttention``, which runs
its PyTorch path on the CPU): the injector lets the patch tokens attend to
the spatial features before a range of ViT blocks, the extractor lets the
spatial features attend to the patch tokens after it.

Module and parameter names follow the official ViT-Adapter / EVA-01
segmentation code (``stem.0``, ``injector.attn.sampling_offsets``,
``extractor.ffn.dwconv.dwconv`` ...), so its checkpoints map key for key.
"""
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.ops import MultiScaleDeformableAttention
from timm.layers import DropPath
from torch.utils.checkpoint import checkpoint

from .norm import LayerNorm

Shape = Tuple[int, int]


class DeformInputs(NamedTuple):
    """What a deformable attention needs besides its query and value.

    Attributes:
        reference_points: (1, num_queries, 1, 2) normalised (x, y) query
            positions in [0, 1], shared by the batch and every value level.
        spatial_shapes: (num_levels, 2) long tensor of the value levels'
            (H, W).
        level_start_index: (num_levels, ) first token of each value level.
    """
    reference_points: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor


def get_reference_points(shapes: Sequence[Shape],
                         device: torch.device) -> torch.Tensor:
    """The pixel centres of one or more maps, normalised to [0, 1].

    Args:
        shapes: The (H, W) of each map, in token order.
        device: Device of the result.

    Returns:
        (1, sum(H * W), 1, 2) positions as (x, y), row-major within a map.
    """
    points = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h,
            (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w,
            indexing='ij')
        points.append(torch.stack([xs.flatten(), ys.flatten()], dim=-1))
    return torch.cat(points)[None, :, None]


def _value_levels(shapes: Sequence[Shape],
                  device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=device)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index


def deform_inputs(vit_shape: Shape, level_shapes: Sequence[Shape],
                  device: torch.device) -> Tuple[DeformInputs, DeformInputs]:
    """Deformable-attention inputs of the injector and the extractor.

    Args:
        vit_shape: The (H, W) grid of the ViT's patch tokens.
        level_shapes: The (H, W) of the spatial prior's 1/8, 1/16 and 1/32
            levels.
        device: Device of the tensors.

    Returns:
        The injector's inputs (patch-token queries over the three levels)
        and the extractor's (queries of all three levels over the patch
        tokens).
    """
    injector = DeformInputs(
        get_reference_points([vit_shape], device),
        *_value_levels(level_shapes, device))
    extractor = DeformInputs(
        get_reference_points(level_shapes, device),
        *_value_levels([vit_shape], device))
    return injector, extractor


def _split_levels(x: torch.Tensor,
                  shapes: Sequence[Shape]) -> List[torch.Tensor]:
    """(B, sum(H * W), C) tokens of several levels -> their (B, C, H, W)."""
    chunks = x.split([h * w for h, w in shapes], dim=1)
    return [
        chunk.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
        for chunk, (h, w) in zip(chunks, shapes)
    ]


class MultiLevelDWConv(nn.Module):
    """One 3x3 depthwise conv applied to each level of a token sequence.

    Args:
        dim: Channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor,
                shapes: Sequence[Shape]) -> torch.Tensor:
        """Convolve (B, sum(H * W), C) tokens level by level, same shape."""
        return torch.cat([
            self.dwconv(level).flatten(2).transpose(1, 2)
            for level in _split_levels(x, shapes)
        ], dim=1)


class ConvFFN(nn.Module):
    """The extractor's feed-forward: Linear, depthwise conv, GELU, Linear.

    Args:
        dim: Input and output channels.
        hidden_dim: Hidden channels (``dim * cffn_ratio``).
        drop: Dropout after the activation and after the output projection.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = MultiLevelDWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor,
                shapes: Sequence[Shape]) -> torch.Tensor:
        """Map (B, sum(H * W), C) tokens of the levels ``shapes``."""
        x = self.act(self.dwconv(self.fc1(x), shapes))
        return self.drop(self.fc2(self.drop(x)))


def _deform_attn(dim: int, num_heads: int, num_levels: int, num_points: int,
                 deform_ratio: float) -> MultiScaleDeformableAttention:
    value_dims = int(dim * deform_ratio)
    if value_dims % num_heads:
        raise ValueError(
            f'The deformable attention projects {dim} channels to '
            f'{value_dims} (deform_ratio={deform_ratio}), which does not '
            f'split into deform_num_heads={num_heads} heads: choose a '
            'deform_ratio or deform_num_heads that divides it.')
    return MultiScaleDeformableAttention(
        embed_dims=dim,
        num_heads=num_heads,
        num_levels=num_levels,
        num_points=num_points,
        dropout=0.,
        batch_first=True,
        value_proj_ratio=deform_ratio)


class Injector(nn.Module):
    """Patch tokens attend to the spatial prior: ``x + gamma * attn``.

    Args:
        dim: Token channels.
        num_heads: Deformable attention heads.
        num_points: Sampling points per head and level.
        num_levels: Value levels (the spatial prior's three).
        deform_ratio: Value projection width relative to ``dim``.
        init_values: Initial layer scale ``gamma``; 0 starts the adapter as
            the identity on the ViT.
        norm_eps: LayerNorm epsilon.
        fp32_norm: Compute the LayerNorms in fp32.
        with_cp: Activation checkpointing while training.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 num_points: int,
                 num_levels: int = 3,
                 deform_ratio: float = 1.,
                 init_values: float = 0.,
                 norm_eps: float = 1e-6,
                 fp32_norm: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.query_norm = LayerNorm(dim, eps=norm_eps, fp32=fp32_norm)
        self.feat_norm = LayerNorm(dim, eps=norm_eps, fp32=fp32_norm)
        self.attn = _deform_attn(dim, num_heads, num_levels, num_points,
                                 deform_ratio)
        self.gamma = nn.Parameter(torch.full((dim, ), float(init_values)))

    def _forward(self, query: torch.Tensor, feat: torch.Tensor,
                 inputs: DeformInputs) -> torch.Tensor:
        attn = self.attn(
            self.query_norm(query),
            value=self.feat_norm(feat),
            # mmcv adds ``identity`` to its output; a zero keeps the bare
            # attention so that gamma scales it alone, not the residual.
            identity=query.new_zeros(()),
            reference_points=inputs.reference_points,
            spatial_shapes=inputs.spatial_shapes,
            level_start_index=inputs.level_start_index)
        return query + self.gamma * attn

    def forward(self, query: torch.Tensor, feat: torch.Tensor,
                inputs: DeformInputs) -> torch.Tensor:
        """Inject ``feat`` (B, M, C) into the patch tokens ``query`` (B, N, C).
        """
        if self.with_cp and self.training and query.requires_grad:
            return checkpoint(
                self._forward, query, feat, inputs, use_reentrant=False)
        return self._forward(query, feat, inputs)


class Extractor(nn.Module):
    """Spatial features attend to the patch tokens, then a ConvFFN.

    Args:
        dim: Token channels.
        num_heads: Deformable attention heads.
        num_points: Sampling points per head.
        deform_ratio: Value projection width relative to ``dim``.
        with_cffn: Follow the attention with a residual :class:`ConvFFN`.
        cffn_ratio: Hidden width of the ConvFFN relative to ``dim``.
        drop: Dropout inside the ConvFFN.
        drop_path: Stochastic depth on the ConvFFN branch.
        norm_eps: LayerNorm epsilon.
        fp32_norm: Compute the LayerNorms in fp32.
        with_cp: Activation checkpointing while training.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 num_points: int,
                 deform_ratio: float = 1.,
                 with_cffn: bool = True,
                 cffn_ratio: float = 0.25,
                 drop: float = 0.,
                 drop_path: float = 0.,
                 norm_eps: float = 1e-6,
                 fp32_norm: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.query_norm = LayerNorm(dim, eps=norm_eps, fp32=fp32_norm)
        self.feat_norm = LayerNorm(dim, eps=norm_eps, fp32=fp32_norm)
        self.attn = _deform_attn(dim, num_heads, 1, num_points, deform_ratio)
        self.with_cffn = with_cffn
        if with_cffn:
            self.ffn = ConvFFN(dim, int(dim * cffn_ratio), drop=drop)
            self.ffn_norm = LayerNorm(dim, eps=norm_eps, fp32=fp32_norm)
            self.drop_path = DropPath(
                drop_path) if drop_path > 0 else nn.Identity()

    def _forward(self, query: torch.Tensor, feat: torch.Tensor,
                 inputs: DeformInputs,
                 level_shapes: Sequence[Shape]) -> torch.Tensor:
        # mmcv adds the identity (the un-normalised query): the residual.
        query = self.attn(
            self.query_norm(query),
            value=self.feat_norm(feat),
            identity=query,
            reference_points=inputs.reference_points,
            spatial_shapes=inputs.spatial_shapes,
            level_start_index=inputs.level_start_index)
        if self.with_cffn:
            query = query + self.drop_path(
                self.ffn(self.ffn_norm(query), level_shapes))
        return query

    def forward(self, query: torch.Tensor, feat: torch.Tensor,
                inputs: DeformInputs,
                level_shapes: Sequence[Shape]) -> torch.Tensor:
        """Update the spatial tokens ``query`` (B, M, C) from ``feat``.

        Args:
            query: Spatial-prior tokens of the levels ``level_shapes``.
            feat: Patch tokens (B, N, C).
            inputs: The extractor's :func:`deform_inputs`.
            level_shapes: The (H, W) of each level of ``query``.

        Returns:
            The updated (B, M, C) tokens.
        """
        if self.with_cp and self.training and query.requires_grad:
            return checkpoint(
                self._forward,
                query,
                feat,
                inputs,
                level_shapes,
                use_reentrant=False)
        return self._forward(query, feat, inputs, level_shapes)


class InteractionBlock(nn.Module):
    """Injector, a range of ViT blocks, extractor (and extra extractors).

    The ViT blocks are not part of this module: they stay in the backbone's
    ``blocks`` so that checkpoints and layer-wise lr decay see a plain ViT.

    Args:
        dim: Token channels.
        num_heads: Deformable attention heads.
        num_points: Sampling points per head and level.
        deform_ratio: Value projection width relative to ``dim``.
        init_values: The injector's initial layer scale.
        with_cffn: Extractors end with a ConvFFN.
        cffn_ratio: Hidden width of the ConvFFN relative to ``dim``.
        drop: Dropout inside the ConvFFN.
        drop_path: Stochastic depth on the ConvFFN branch.
        extra_extractor: Add two more extractors (the last block in
            ViT-Adapter).
        norm_eps: LayerNorm epsilon.
        fp32_norm: Compute the LayerNorms in fp32.
        with_cp: Activation checkpointing while training.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 num_points: int,
                 deform_ratio: float = 1.,
                 init_values: float = 0.,
                 with_cffn: bool = True,
                 cffn_ratio: float = 0.25,
                 drop: float = 0.,
                 drop_path: float = 0.,
                 extra_extractor: bool = False,
                 norm_eps: float = 1e-6,
                 fp32_norm: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        norm = dict(norm_eps=norm_eps, fp32_norm=fp32_norm, with_cp=with_cp)
        self.injector = Injector(
            dim,
            num_heads,
            num_points,
            deform_ratio=deform_ratio,
            init_values=init_values,
            **norm)

        def extractor() -> Extractor:
            return Extractor(
                dim,
                num_heads,
                num_points,
                deform_ratio=deform_ratio,
                with_cffn=with_cffn,
                cffn_ratio=cffn_ratio,
                drop=drop,
                drop_path=drop_path,
                **norm)

        self.extractor = extractor()
        self.extra_extractors = nn.Sequential(
            extractor(), extractor()) if extra_extractor else None

    def forward(self, tokens: torch.Tensor, c: torch.Tensor,
                run_blocks: Callable[[torch.Tensor], torch.Tensor],
                injector_inputs: DeformInputs,
                extractor_inputs: DeformInputs,
                level_shapes: Sequence[Shape],
                num_extra_tokens: int = 0
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One round of interaction.

        Args:
            tokens: ViT tokens (B, extra + N, C): leading extra (cls) tokens,
                then the patch tokens.
            c: Spatial-prior tokens (B, M, C) of the levels ``level_shapes``.
            run_blocks: Runs this interaction's ViT blocks on all tokens.
            injector_inputs: The injector's :func:`deform_inputs`.
            extractor_inputs: The extractor's :func:`deform_inputs`.
            level_shapes: The (H, W) of each spatial-prior level.
            num_extra_tokens: Leading tokens that pass through the ViT blocks
                only; injector and extractor act on the patch tokens.

        Returns:
            The updated ViT tokens and spatial-prior tokens.
        """
        extra = tokens[:, :num_extra_tokens]
        patches = self.injector(tokens[:, num_extra_tokens:], c,
                                injector_inputs)
        tokens = run_blocks(torch.cat([extra, patches], dim=1))
        patches = tokens[:, num_extra_tokens:]
        extractors = [self.extractor, *(self.extra_extractors or ())]
        for extractor in extractors:
            c = extractor(c, patches, extractor_inputs, level_shapes)
        return tokens, c


class SpatialPriorModule(nn.Module):
    """ViT-Adapter's conv stem: features at 1/4, 1/8, 1/16 and 1/32.

    A ResNet-like stem (three 3x3 convs, max pool) gives the 1/4 map; three
    stride-2 convs give 1/8, 1/16 and 1/32; 1x1 convs project each to the
    ViT width.

    Args:
        inplanes: Stem width (64 in ViT-Adapter); the deeper levels have 2x
            and 4x.
        embed_dims: Output channels (the ViT width).
        in_channels: Image channels.
        norm_cfg: mmcv config of the norm after each conv (SyncBN in
            ViT-Adapter; BN for single-process or CPU use).
    """

    def __init__(self,
                 inplanes: int,
                 embed_dims: int,
                 in_channels: int = 3,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        norm_cfg = norm_cfg or dict(type='SyncBN', requires_grad=True)

        def conv_norm_relu(cin: int, cout: int,
                           stride: int) -> List[nn.Module]:
            # Plain Sequential entries (not ConvModule) keep the official
            # key names stem.0/stem.1/...
            return [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                build_norm_layer(norm_cfg, cout)[1],
                nn.ReLU(inplace=True)
            ]

        self.stem = nn.Sequential(
            *conv_norm_relu(in_channels, inplanes, 2),
            *conv_norm_relu(inplanes, inplanes, 1),
            *conv_norm_relu(inplanes, inplanes, 1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.conv2 = nn.Sequential(*conv_norm_relu(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(
            *conv_norm_relu(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(
            *conv_norm_relu(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, embed_dims, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, embed_dims, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, embed_dims, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, embed_dims, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The four (B, embed_dims, H/s, W/s) maps, s = 4, 8, 16, 32."""
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        return self.fc1(c1), self.fc2(c2), self.fc3(c3), self.fc4(c4)
