"""EVAViTAdapter: EVAViT with ViT-Adapter, EVA-01's semantic segmentation
backbone."""
import math
from functools import partial
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.ops import MultiScaleDeformableAttention

from eva_mm.registry import MODELS
from ..layers.adapter import (InteractionBlock, SpatialPriorModule,
                              deform_inputs)
from .eva_vit import EVAViT

# The strides of the spatial prior's levels; the deformable attention
# exchanges information with the last three.
_STRIDES = (4, 8, 16, 32)


def default_interaction_indexes(num_layers: int) -> List[List[int]]:
    """Split ``num_layers`` blocks into 4 consecutive, near-equal ranges.

    Args:
        num_layers: ViT depth, at least 4.

    Returns:
        ``[[first, last], ...]`` block indexes (inclusive) of each range,
        e.g. ``[[0, 9], [10, 19], [20, 29], [30, 39]]`` for 40 blocks.
    """
    if num_layers < 4:
        raise ValueError(f'ViT-Adapter needs at least 4 blocks (one per '
                         f'interaction), got {num_layers}.')
    bounds = [num_layers * i // 4 for i in range(5)]
    return [[bounds[i], bounds[i + 1] - 1] for i in range(4)]


@MODELS.register_module()
class EVAViTAdapter(EVAViT):
    """EVA ViT with ViT-Adapter (Chen et al., arXiv:2205.08534).

    EVA-01's semantic segmentation backbone (``BEiTAdapter`` in
    baaivision/EVA, EVA-01/seg): the plain EVAViT, unchanged in parameters
    and checkpoint keys, plus a convolutional spatial prior module and four
    interaction blocks. Each interaction injects the spatial features into
    the patch tokens (deformable attention, scaled by a zero-initialised
    ``gamma``), runs its range of ViT blocks, and extracts the patch tokens
    back into the spatial features. The output is four multi-scale maps, as
    a CNN gives, for mmseg decode heads (UPerNet, Mask2Former).

    The cls token passes through the blocks with the patch tokens; the
    injector and extractor act on patch tokens only. As in the official code
    the cls token enters without position embedding: only the patch tokens
    get theirs (``pos_embed[:, 1:]``, official
    ``seg/mmseg_custom/models/backbones/beit_adapter.py:104-110``), so
    ``pos_embed[:, 0]`` is kept for checkpoints but unused. The position
    embedding is resized at run time to the input's grid, so any input whose
    sides are multiples of 32 and of the patch size works (the official code
    needs the 896 x 896 grid it was trained on).

    Layer-wise lr decay is :meth:`EVAViT.get_layer_depth`: the ViT keeps its
    layers and every adapter parameter is in the last layer (full learning
    rate), as in the official EVA segmentation constructor; that
    constructor's layer 0 for the Mask2Former head's query, level, class and
    mask embeddings is the constructor option ``layer_zero_prefixes``.

    Defaults are the EVA-01 ViT-g segmentation backbone (official config
    ``eva_mask2former_896_40k_coco164k2ade20k_ms_relpos_layerscale_9dec.py``)
    except its fine-tuning regularisation, which configs set:
    ``rel_pos='bias'``, ``layer_scale_init_value=1.0``, ``drop_path_rate``.

    Args:
        arch: EVAViT arch (preset name or dict).
        img_size: Input size of the position embedding (896 in EVA-01 seg).
        patch_size: Patch size (16 in EVA-01 seg: the 14-pixel pre-trained
            kernel is resized on load).
        in_channels: Image channels.
        drop_rate: Dropout of the ViT (see :class:`EVAViT`) and of the
            extractors' ConvFFN.
        drop_path_rate: Stochastic depth of the ViT blocks (linear in
            depth), see :class:`EVAViT`.
        norm_eps: LayerNorm epsilon, of the ViT and the adapter.
        fp32_norm: Compute every LayerNorm in fp32.
        with_cp: Activation checkpointing while training: of the ViT blocks
            as :class:`EVAViT`'s ``with_cp`` says (``True``, ``'all'``,
            ``'global'``, ``'attn'``), and of the injectors and extractors
            whenever it is not ``False``.
        conv_inplane: Width of the spatial prior's stem.
        deform_num_heads: Heads of the deformable attentions.
        n_points: Sampling points per head and level.
        deform_ratio: Width of the deformable attentions' value projection
            relative to the embedding width.
        cffn_ratio: Hidden width of the extractors' ConvFFN relative to the
            embedding width.
        with_cffn: Extractors end with a ConvFFN.
        init_values: Initial value of the injectors' layer scale ``gamma``.
        interaction_indexes: ``[[first, last], ...]`` inclusive block ranges
            of the interactions, consecutive and covering every block;
            ``None`` splits the depth into 4 equal ranges
            (``[[0, 9], [10, 19], [20, 29], [30, 39]]`` for ViT-g).
        add_vit_feature: Add the ViT's feature of each interaction, resized,
            to the output of the same index.
        use_extra_extractor: Give the last interaction two extra extractors.
        cffn_drop_path_rate: Stochastic depth of the ConvFFN branches;
            ``None`` uses ``drop_path_rate`` as the official code does.
        norm_cfg: mmcv norm config of the spatial prior and of the four
            output norms. SyncBN (official) is reverted to BN by mmengine's
            runner when training is not distributed; build with
            ``dict(type='BN')`` to run the model outside a runner.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` loads a plain
            EVAViT checkpoint into the ViT part; the adapter keeps its
            initialisation.
        **vit_kwargs: Further :class:`EVAViT` options with EVAViT's defaults,
            e.g. ``with_cls_token`` (True: EVA-01 seg keeps the cls token),
            ``qkv_bias``, ``attn_drop_rate``, ``layer_scale_init_value``,
            ``use_abs_pos_embed``, ``rel_pos``, ``window_size`` (0:
            ViT-Adapter attends globally), ``global_block_indexes``,
            ``frozen_stages``, ``freeze_patch_embed``. ``out_type`` and
            ``final_norm`` are the adapter's (feature maps, no final norm).
    """

    # Not in a pre-trained ViT file: the checkpoint loader leaves them at
    # their initialisation instead of reporting them missing.
    task_modules = ('spm', 'interactions', 'level_embed', 'up', 'norm1',
                    'norm2', 'norm3', 'norm4')

    def __init__(self,
                 arch: Union[str, dict] = 'giant',
                 img_size: Union[int, Sequence[int]] = 896,
                 patch_size: Optional[int] = 16,
                 in_channels: int = 3,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_eps: float = 1e-6,
                 fp32_norm: bool = False,
                 with_cp: Union[bool, str] = False,
                 conv_inplane: int = 64,
                 deform_num_heads: int = 16,
                 n_points: int = 4,
                 deform_ratio: float = 0.5,
                 cffn_ratio: float = 0.25,
                 with_cffn: bool = True,
                 init_values: float = 0.,
                 interaction_indexes: Optional[Sequence[Sequence[int]]] = None,
                 add_vit_feature: bool = True,
                 use_extra_extractor: bool = True,
                 cffn_drop_path_rate: Optional[float] = None,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 **vit_kwargs: Any) -> None:
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            in_channels=in_channels,
            out_type='featmap',
            final_norm=False,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            norm_eps=norm_eps,
            fp32_norm=fp32_norm,
            with_cp=with_cp,
            init_cfg=init_cfg,
            **vit_kwargs)
        self.interaction_indexes = self._check_interaction_indexes(
            interaction_indexes, add_vit_feature)
        self.add_vit_feature = add_vit_feature
        norm_cfg = norm_cfg or dict(type='SyncBN', requires_grad=True)
        dim = self.embed_dims
        if cffn_drop_path_rate is None:
            cffn_drop_path_rate = drop_path_rate

        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.spm = SpatialPriorModule(
            conv_inplane, dim, in_channels=in_channels, norm_cfg=norm_cfg)
        last = len(self.interaction_indexes) - 1
        self.interactions = nn.Sequential(*[
            InteractionBlock(
                dim,
                deform_num_heads,
                n_points,
                deform_ratio=deform_ratio,
                init_values=init_values,
                with_cffn=with_cffn,
                cffn_ratio=cffn_ratio,
                drop=drop_rate,
                drop_path=cffn_drop_path_rate,
                extra_extractor=use_extra_extractor and i == last,
                norm_eps=norm_eps,
                fp32_norm=fp32_norm,
                with_cp=bool(with_cp)) for i in range(last + 1)
        ])
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norm1 = build_norm_layer(norm_cfg, dim)[1]
        self.norm2 = build_norm_layer(norm_cfg, dim)[1]
        self.norm3 = build_norm_layer(norm_cfg, dim)[1]
        self.norm4 = build_norm_layer(norm_cfg, dim)[1]
        self._init_adapter()

    # ------------------------------------------------------------------
    # Construction helpers
    # ------------------------------------------------------------------
    def _check_interaction_indexes(
            self, indexes: Optional[Sequence[Sequence[int]]],
            add_vit_feature: bool) -> List[List[int]]:
        if indexes is None:
            return default_interaction_indexes(self.num_layers)
        indexes = [list(map(int, pair)) for pair in indexes]
        expected_start = 0
        for pair in indexes:
            if len(pair) != 2 or pair[0] != expected_start or \
                    pair[1] < pair[0]:
                raise ValueError(
                    f'interaction_indexes {indexes} must be [first, last] '
                    'block ranges that follow each other from block 0, e.g. '
                    f'{default_interaction_indexes(max(self.num_layers, 4))}.')
            expected_start = pair[1] + 1
        if expected_start != self.num_layers:
            raise ValueError(
                f'interaction_indexes {indexes} cover blocks 0-'
                f'{expected_start - 1} of {self.num_layers}: every block must '
                'run in one interaction; the last range ends at block '
                f'{self.num_layers - 1}.')
        if add_vit_feature and len(indexes) != 4:
            raise ValueError(
                f'add_vit_feature=True adds the ViT feature of each '
                f'interaction to one of the 4 outputs, so it needs 4 '
                f'interaction ranges, got {len(indexes)}.')
        return indexes

    def _init_adapter(self) -> None:
        """ViT-Adapter's initialisation of the parts it adds to the ViT."""
        for part in (self.spm, self.interactions, self.up):
            part.apply(self._init_adapter_module)
        for module in self.modules():
            # After the Linear init above: restores the deformable
            # attention's own sampling-offset grid and zero attention logits.
            if isinstance(module, MultiScaleDeformableAttention):
                module.init_weights()
        nn.init.normal_(self.level_embed)

    @staticmethod
    def _init_adapter_module(module: nn.Module) -> None:
        # Norms keep PyTorch's ones/zeros, which is ViT-Adapter's init too.
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            # He init by fan-out, as the official code.
            fan_out = math.prod(module.kernel_size) * module.out_channels
            nn.init.normal_(
                module.weight, std=math.sqrt(2.0 * module.groups / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError('EVAViTAdapter takes (B, C, H, W) images, got '
                             f'shape {tuple(x.shape)}.')
        multiple = math.lcm(_STRIDES[-1], self.patch_size)
        h, w = x.shape[-2:]
        if h % multiple or w % multiple:
            raise ValueError(
                f'EVAViTAdapter needs an input height and width that are '
                f'multiples of {multiple} (the 1/32 level of the spatial '
                f'prior and the patch size {self.patch_size}), got {h}x{w}. '
                'Pad the images: in mmseg give the SegDataPreProcessor '
                f'size_divisor={multiple} (training batches) and test_cfg='
                f'dict(size_divisor={multiple}) (test batches) and use crop '
                f'sizes that are multiples of {multiple}; in mmdet '
                f'pad_size_divisor={multiple}.')

    def _run_blocks(self, tokens: torch.Tensor, first: int, last: int,
                    grid: Tuple[int, int], shared: dict) -> torch.Tensor:
        """Blocks ``first`` to ``last`` (inclusive) on all tokens."""
        for block in self.blocks[first:last + 1]:
            tokens = self._run_block(block, tokens, grid, shared)
        return tokens

    def _embed(self,
               x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch tokens with their position embedding, then the cls token
        prepended without one (official beit_adapter.py:104-110).

        Args:
            x: Images (B, C, H, W).

        Returns:
            Tokens (B, extra + N, C) and the patch grid (H/p, W/p).
        """
        patches, grid = self.patch_embed(x)
        extra = self.num_extra_tokens
        if self.pos_embed is not None:
            patches = patches + self._pos_embed_for(grid)[:, extra:]
        patches = self.pos_drop(patches)
        if self.cls_token is None:
            return patches, grid
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1), grid

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Four multi-scale feature maps.

        Args:
            x: Images (B, C, H, W), H and W multiples of 32 and of the patch
                size.

        Returns:
            Maps (B, embed_dims, H/s, W/s) for s = 4, 8, 16, 32.
        """
        self._check_input(x)
        b = x.shape[0]
        h, w = x.shape[-2:]
        level_shapes = [(h // s, w // s) for s in _STRIDES]
        c1, *levels = self.spm(x)
        # The spatial prior's 1/8, 1/16, 1/32 levels as one token sequence.
        c = torch.cat([
            level.flatten(2).transpose(1, 2) + self.level_embed[i]
            for i, level in enumerate(levels)
        ], dim=1)

        tokens, grid = self._embed(x)
        extra = self.num_extra_tokens
        injector_inputs, extractor_inputs = deform_inputs(
            grid, level_shapes[1:], x.device)

        vit_features = []
        shared: dict = {}
        for interaction, (first, last) in zip(self.interactions,
                                              self.interaction_indexes):
            tokens, c = interaction(
                tokens,
                c,
                partial(self._run_blocks, first=first, last=last, grid=grid,
                        shared=shared),
                injector_inputs,
                extractor_inputs,
                level_shapes[1:],
                num_extra_tokens=extra)
            vit_features.append(tokens[:, extra:].transpose(1, 2).reshape(
                b, -1, *grid))

        c2, c3, c4 = (
            chunk.transpose(1, 2).reshape(b, -1, *shape) for chunk, shape in
            zip(c.split([hh * ww for hh, ww in level_shapes[1:]], dim=1),
                level_shapes[1:]))
        outs = [self.up(c2) + c1, c2, c3, c4]
        if self.add_vit_feature:
            outs = [
                out + F.interpolate(
                    feature,
                    size=out.shape[-2:],
                    mode='bilinear',
                    align_corners=False)
                for out, feature in zip(outs, vit_features)
            ]
        norms = (self.norm1, self.norm2, self.norm3, self.norm4)
        return tuple(norm(out) for norm, out in zip(norms, outs))
