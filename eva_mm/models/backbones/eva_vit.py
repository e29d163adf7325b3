"""EVAViT: the one EVA (EVA-01 and EVA-02) vision transformer behind every task
of eva_mm."""
import math
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from timm.layers import build_rotary_pos_embed
from torch.nn.modules.utils import _pair
from torch.utils.checkpoint import checkpoint

from eva_mm.registry import MODELS, WEIGHT_INITIALIZERS
from ..layers.pos_embed import (TargetSizes, fit_state_dict,
                                resize_pos_embed, resize_pos_embed_3d)
from ..layers.attention import TokenPositions
from ..layers.norm import LayerNorm
from ..layers.patch_embed import PatchEmbed
from ..layers.transformer import EVABlock


# What every EVA-02 preset shares.
_EVA02 = dict(
    patch_size=14, swiglu_mlp=True, use_rot_pos_emb=True, ref_feat_shape=16)


@MODELS.register_module()
class EVAViT(BaseModule):
    """The EVA vision transformer: EVA-01 (arXiv:2211.07636) and EVA-02.

    A plain ViT: conv patch embedding, cls token, learned absolute position
    embedding, pre-norm blocks whose attention has ``q_bias``/``v_bias`` only,
    and a final LayerNorm. The variants every task needs are options of this
    one class: dense feature maps with ViTDet window attention and relative
    positions (detection, segmentation), a ``mask_token`` (masked image
    modelling), pooled outputs (classification), and video (action
    recognition): with ``num_frames > 1`` the patch embedding is a Conv3d
    tubelet over (B, C, T, H, W) clips and every block attends jointly over
    all T' x H' x W' tokens plus cls, as EVA's video models do.

    EVA-02 (Fang et al., arXiv:2303.11331) is options of the same class, with
    timm's names: ``swiglu_mlp``, ``scale_mlp``, ``scale_attn_inner``,
    ``use_rot_pos_emb`` and ``ref_feat_shape``; the ``eva02-*`` presets set
    them all (patch 14; ``patch_size=16`` gives the detection variant).

    Args:
        arch: A preset name from :attr:`arch_zoo` or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads``, ``mlp_hidden_dim``
            and optionally ``patch_size`` and the EVA-02 options
            (:attr:`ARCH_OPTIONS`), which an explicit argument overrides.
        img_size: The input size the position embedding is learned for
            (other sizes are resized at run time).
        patch_size: Patch size; ``None`` takes the preset's (14 for giant,
            16 for the others).
        in_channels: Input image channels.
        out_type: ``'raw'`` (B, N, C) tokens, ``'cls_token'`` (B, C),
            ``'featmap'`` (B, C, H, W) patch tokens, or ``'avg_featmap'``
            (B, C) mean of the patch tokens.
        out_indices: Blocks whose output is returned; negative indices count
            from the end.
        with_cls_token: Prepend a cls token (dense ViTDet models drop it).
        final_norm: Apply the final LayerNorm after the last block.
        use_fc_norm: With ``'avg_featmap'``, apply a LayerNorm ``fc_norm``
            after pooling (set ``final_norm=False`` as timm does).
        with_mask_token: Learn a ``mask_token`` that replaces the embeddings
            of masked patches (masked image modelling).
        qkv_bias: Learn ``q_bias`` and ``v_bias`` in attention.
        drop_rate: Dropout after adding the position embedding and in the
            projections.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Stochastic depth rate, linearly increasing with depth.
        layer_scale_init_value: Initial layer-scale value; 0 disables it.
        norm_eps: LayerNorm epsilon.
        fp32_norm: Compute every LayerNorm in fp32 (as the official code).
        use_abs_pos_embed: Learn an absolute position embedding.
        rel_pos: ``None``, ``'decomposed'`` (ViTDet) or ``'bias'`` (BEiT)
            relative positions in every block.
        window_size: Window (in patches) of the window-attention blocks.
        global_block_indexes: Blocks that attend globally when
            ``window_size`` > 0; all other blocks use windows.
        frozen_stages: Freeze the embeddings and the first ``frozen_stages``
            blocks; -1 freezes nothing, 0 only the embeddings.
        freeze_patch_embed: Freeze the patch embedding only.
        with_cp: Activation checkpointing while training, to trade time
            for memory: ``True`` or ``'all'`` recomputes every block in the
            backward pass, ``'global'`` only the global-attention blocks of
            a windowed model (their attention over the whole grid is what
            grows with the image), ``'attn'`` only the attention (with its
            LayerNorm) of every block; ``False`` none. Measured on the
            benchmark: docs/benchmark.md.
        tuple_output: Return a tuple of outputs, the convention of mmdet,
            mmseg and mmpretrain; ``False`` returns the one output tensor,
            as mmaction2's recognizers expect (needs a single out index).
        num_frames: Frames per clip; 1 builds the image model, more builds
            the video model, whose inputs are (B, C, T, H, W) and whose
            ``'featmap'`` output is (B, C, T', H', W').
        tubelet_size: Temporal kernel and stride of the video patch
            embedding. An image kernel loaded into it is inflated: repeated
            over time and divided by ``tubelet_size``.
        temporal_pos_embed: Video only. ``False`` (EVA) keeps the spatial
            position embedding (1, 1 + H'W', C) and tiles it over the T'
            token frames at run time, so image checkpoints load unchanged.
            ``True`` learns a space-time embedding (1, 1 + T'H'W', C); a
            loaded spatial one is tiled over time and one learned for
            another frame count (8 -> 16) is resized trilinearly.
        rel_pos_resize: How a loaded decomposed relative position table of
            another length is resized to this model's: ``'linear'``
            (ViTDet) or ``'beit'`` (EVA-01's cubic resize for its 1536 px
            evaluation), see :func:`resize_rel_pos`.
        swiglu_mlp: SwiGLU MLP (timm's ``SwiGLU``: ``mlp.fc1_g``,
            ``mlp.fc1_x``, ``mlp.fc2``) instead of GELU. ``None`` takes the
            preset's value (True for ``eva02-*``), else False.
        scale_mlp: Sub-LN ``mlp.norm`` on the MLP hidden features (EVA-02
            base/large ``subln``). ``None``: the preset's, else False.
        scale_attn_inner: LayerNorm ``attn.norm`` before the attention
            output projection (EVA-02 CLIP ``inner_attn_ln``). ``None``: the
            preset's, else False.
        use_rot_pos_emb: 2D rotary position embedding (RoPE) of q and k on
            the patch tokens, never on the cls token, as EVA-02 (built by
            timm's ``RotaryEmbeddingCat``, no parameters). Window blocks
            get the RoPE of their window, global blocks that of the whole
            grid, as the EVA-02 detection backbone. ``None``: the preset's,
            else False. Not for video.
        ref_feat_shape: The RoPE reference grid: positions of an (H, W) grid
            are scaled to it, ``i * ref / H`` (EVA-02's ``pt_seq_len`` with
            ``intp_freq=True``; 16 = 224/14 for every released EVA-02 model,
            also at patch 16 and in windows). ``None`` leaves positions
            unscaled (timm's meaning); the presets set 16.
        init_mode: The random initialisation: ``'beit'`` (EVA-01 and BEiT:
            truncated normal 0.02, residual projections divided by
            ``sqrt(2 * layer)``) or ``'eva02-mim'``, the official EVA-02
            pre-training one (EVA-02/asuka/modeling_pretrain.py:109-154):
            xavier-normal Linear weights of the official layer shapes
            (fused qkv and packed SwiGLU ``w12`` without sub-LN, separate
            q/k/v and ``w1``/``w2`` with it), a xavier-uniform patch kernel,
            tokens truncated at one std, and with sub-LN the MLP, ``proj``
            and value weights scaled by ``sqrt(log(2 * depth))``.
        fp32_attention: Compute the attention in fp32 under mixed precision
            (EVA-01's video model, ``qk_float``), see :class:`EVAAttention`.
        compile: Compile the backbone's forward with ``torch.compile``:
            ``True``, or a dict of ``torch.compile`` arguments (e.g.
            ``dict(mode='max-autotune')``). Every geometry (windows, relative
            positions, RoPE, cls token, video) compiles without a graph
            break. The rest of the model stays eager, so this works where
            mmengine's ``compile`` key, which compiles the whole detector's
            ``train_step``, meets the graph breaks of the toolboxes' heads.
        init_cfg: mmengine initialisation config; ``type='Pretrained'`` loads
            a checkpoint with resizing and a clear key report.
    """

    arch_zoo: Dict[str, dict] = {
        # Tiny matches DeiT-Ti widths; small enough for CPU tests.
        'tiny': dict(embed_dims=192, num_layers=12, num_heads=3,
                     mlp_hidden_dim=768, patch_size=16),
        'small': dict(embed_dims=384, num_layers=12, num_heads=6,
                      mlp_hidden_dim=1536, patch_size=16),
        'base': dict(embed_dims=768, num_layers=12, num_heads=12,
                     mlp_hidden_dim=3072, patch_size=16),
        'large': dict(embed_dims=1024, num_layers=24, num_heads=16,
                      mlp_hidden_dim=4096, patch_size=16),
        # EVA-01 ViT-g/14 (paper, Table 1): 40 layers, width 1408, MLP 6144.
        'giant': dict(embed_dims=1408, num_layers=40, num_heads=16,
                      mlp_hidden_dim=6144, patch_size=14),
        # EVA-02 (EVA-02/asuka/modeling_pretrain.py:251-329, timm
        # eva02_*_patch14_224): MLP ratio 4 * 2 / 3 (int(dim * 8 / 3)),
        # SwiGLU, RoPE with pt_hw_seq_len 16; base and large add the sub-LN
        # (subln=True, naiveswiglu) that tiny and small (xformers SwiGLU)
        # have not.
        'eva02-tiny': dict(_EVA02, embed_dims=192, num_layers=12,
                           num_heads=3, mlp_hidden_dim=512, scale_mlp=False),
        'eva02-small': dict(_EVA02, embed_dims=384, num_layers=12,
                            num_heads=6, mlp_hidden_dim=1024,
                            scale_mlp=False),
        'eva02-base': dict(_EVA02, embed_dims=768, num_layers=12,
                           num_heads=12, mlp_hidden_dim=2048, scale_mlp=True),
        'eva02-large': dict(_EVA02, embed_dims=1024, num_layers=24,
                            num_heads=16, mlp_hidden_dim=2730,
                            scale_mlp=True),
    }
    # Options an arch dict may carry; an explicit (non-None) argument wins.
    ARCH_OPTIONS = ('swiglu_mlp', 'scale_mlp', 'scale_attn_inner',
                    'use_rot_pos_emb', 'ref_feat_shape')
    OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap')
    CHECKPOINT_MODES = (False, True, 'all', 'global', 'attn')

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: Optional[int] = None,
                 in_channels: int = 3,
                 out_type: str = 'cls_token',
                 out_indices: Union[int, Sequence[int]] = -1,
                 with_cls_token: bool = True,
                 final_norm: bool = True,
                 use_fc_norm: bool = False,
                 with_mask_token: bool = False,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 0.,
                 norm_eps: float = 1e-6,
                 fp32_norm: bool = False,
                 use_abs_pos_embed: bool = True,
                 rel_pos: Optional[str] = None,
                 window_size: int = 0,
                 global_block_indexes: Sequence[int] = (),
                 frozen_stages: int = -1,
                 freeze_patch_embed: bool = False,
                 with_cp: Union[bool, str] = False,
                 tuple_output: bool = True,
                 num_frames: int = 1,
                 tubelet_size: int = 1,
                 temporal_pos_embed: bool = False,
                 rel_pos_resize: str = 'linear',
                 swiglu_mlp: Optional[bool] = None,
                 scale_mlp: Optional[bool] = None,
                 scale_attn_inner: Optional[bool] = None,
                 use_rot_pos_emb: Optional[bool] = None,
                 ref_feat_shape: Optional[Union[int, Sequence[int]]] = None,
                 init_mode: str = 'beit',
                 fp32_attention: bool = False,
                 compile: Union[bool, dict] = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        options = self._arch_options(
            swiglu_mlp=swiglu_mlp,
            scale_mlp=scale_mlp,
            scale_attn_inner=scale_attn_inner,
            use_rot_pos_emb=use_rot_pos_emb,
            ref_feat_shape=ref_feat_shape)
        self.embed_dims = self.arch_settings['embed_dims']
        self.num_layers = self.arch_settings['num_layers']
        patch_size = patch_size or self.arch_settings.get('patch_size', 16)
        if out_type not in self.OUT_TYPES:
            raise ValueError(
                f'out_type must be one of {self.OUT_TYPES}, got {out_type!r}.')
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError("out_type='cls_token' needs with_cls_token=True.")
        self.out_type = out_type
        self.out_indices = self._parse_out_indices(out_indices)
        if not tuple_output and len(self.out_indices) != 1:
            raise ValueError('tuple_output=False needs exactly one out index, '
                             f'got {self.out_indices}.')
        self.tuple_output = tuple_output
        self.num_extra_tokens = int(with_cls_token)
        self.final_norm = final_norm
        self.frozen_stages = frozen_stages
        self.freeze_patch_embed = freeze_patch_embed
        if with_cp not in self.CHECKPOINT_MODES:
            raise ValueError(f'with_cp must be one of {self.CHECKPOINT_MODES}'
                             f', got {with_cp!r}.')
        self.with_cp = with_cp
        if rel_pos_resize not in ('linear', 'beit'):
            raise ValueError("rel_pos_resize must be 'linear' or 'beit', got "
                             f'{rel_pos_resize!r}.')
        self.rel_pos_resize = rel_pos_resize

        self.img_size = _pair(img_size)
        self.patch_size = patch_size
        self.is_video = num_frames > 1
        if self.is_video and (window_size or rel_pos):
            # EVA's video model attends globally with absolute positions.
            raise ValueError('The video EVAViT (num_frames > 1) supports '
                             'neither window attention nor rel_pos.')
        if self.is_video and num_frames % tubelet_size:
            raise ValueError(f'num_frames={num_frames} is not a multiple of '
                             f'tubelet_size={tubelet_size}.')
        if temporal_pos_embed and not self.is_video:
            raise ValueError('temporal_pos_embed needs num_frames > 1.')
        if self.is_video and options['use_rot_pos_emb']:
            # EVA-02 has no video model; a 3D RoPE would be a new design.
            raise ValueError('use_rot_pos_emb (2D RoPE) is for images: build '
                             'the video EVAViT (num_frames > 1) with '
                             'use_rot_pos_emb=False.')
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.temporal_pos_embed = temporal_pos_embed
        self.patch_embed = PatchEmbed(
            patch_size,
            in_channels,
            self.embed_dims,
            tubelet_size=tubelet_size if self.is_video else None)
        self.patch_resolution = (self.img_size[0] // patch_size,
                                 self.img_size[1] // patch_size)
        # The grid the position embedding is learned for.
        self.pos_grid: Tuple[int, ...] = self.patch_resolution
        if temporal_pos_embed:
            self.pos_grid = (num_frames // tubelet_size,
                             *self.patch_resolution)
        num_patches = math.prod(self.pos_grid)

        self.cls_token = nn.Parameter(torch.zeros(
            1, 1, self.embed_dims)) if with_cls_token else None
        self.mask_token = nn.Parameter(torch.zeros(
            1, 1, self.embed_dims)) if with_mask_token else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_extra_tokens + num_patches,
                        self.embed_dims)) if use_abs_pos_embed else None
        self.pos_drop = nn.Dropout(drop_rate)
        if init_mode not in ('beit', 'eva02-mim'):
            raise ValueError("init_mode must be 'beit' or 'eva02-mim', got "
                             f'{init_mode!r}.')
        self.init_mode = init_mode
        self.scale_mlp = bool(options['scale_mlp'])
        self.use_rot_pos_emb = bool(options['use_rot_pos_emb'])
        ref = options['ref_feat_shape']
        self.ref_feat_shape = _pair(ref) if ref is not None else None
        # RoPE has no parameters or buffers: its tables are a function of
        # the grid, built on the input's device and cached.
        self._rope_cache: Dict[tuple, torch.Tensor] = {}

        global_blocks = {i % self.num_layers for i in global_block_indexes}
        # Plain Python so that building on the meta device works too.
        dpr = [
            drop_path_rate * i / max(self.num_layers - 1, 1)
            for i in range(self.num_layers)
        ]
        self.blocks = nn.ModuleList([
            EVABlock(
                self.embed_dims,
                self.arch_settings['num_heads'],
                self.arch_settings['mlp_hidden_dim'],
                qkv_bias=qkv_bias,
                drop_path=dpr[i],
                attn_drop=attn_drop_rate,
                proj_drop=drop_rate,
                layer_scale_init_value=layer_scale_init_value,
                norm_eps=norm_eps,
                fp32_norm=fp32_norm,
                window_size=0 if i in global_blocks else window_size,
                rel_pos=rel_pos,
                rel_pos_size=self.patch_resolution,
                num_extra_tokens=self.num_extra_tokens,
                swiglu_mlp=options['swiglu_mlp'],
                scale_mlp=options['scale_mlp'],
                scale_attn_inner=options['scale_attn_inner'],
                fp32_attention=fp32_attention,
                checkpoint_attn=with_cp == 'attn')
            for i in range(self.num_layers)
        ])
        self.norm = LayerNorm(
            self.embed_dims, eps=norm_eps,
            fp32=fp32_norm) if final_norm else None
        self.fc_norm = LayerNorm(
            self.embed_dims, eps=norm_eps,
            fp32=fp32_norm) if use_fc_norm else None

        self._init_parameters()
        self._register_load_state_dict_pre_hook(self._resize_on_load)
        self._freeze()
        if compile:
            # nn.Module.compile: __call__ runs the compiled forward, the
            # module (state dict, hooks, deepcopy for EMA) stays as it is.
            self.compile(**(compile if isinstance(compile, dict) else {}))

    # ------------------------------------------------------------------
    # Construction helpers
    # ------------------------------------------------------------------
    def _parse_arch(self, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch not in self.arch_zoo:
                raise KeyError(f'Unknown EVAViT arch {arch!r}; choose one of '
                               f'{sorted(self.arch_zoo)} or give a dict.')
            return dict(self.arch_zoo[arch])
        required = {'embed_dims', 'num_layers', 'num_heads', 'mlp_hidden_dim'}
        missing = required - set(arch)
        if missing:
            raise KeyError(f'Custom arch is missing {sorted(missing)}.')
        return dict(arch)

    def _arch_options(self, **given) -> dict:
        """Each EVA-02 option: the argument if given, else the arch's."""
        options = {}
        for name, value in given.items():
            if value is None:
                value = self.arch_settings.get(name)
            if value is None and name != 'ref_feat_shape':
                value = False
            options[name] = value
        return options

    def _parse_out_indices(self, out_indices) -> List[int]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        parsed = []
        for index in out_indices:
            if not -self.num_layers <= index < self.num_layers:
                raise ValueError(f'out index {index} is out of range for '
                                 f'{self.num_layers} blocks.')
            parsed.append(index % self.num_layers)
        return sorted(parsed)

    def _init_parameters(self) -> None:
        if self.init_mode == 'eva02-mim':
            self._init_eva02_mim()
            return
        for param in (self.pos_embed, self.cls_token, self.mask_token):
            if param is not None:
                nn.init.trunc_normal_(param, std=.02)
        self.apply(self._init_module)
        # BEiT/EVA rescale the residual projections by depth so that the
        # residual stream keeps its scale at initialisation.
        for layer_id, block in enumerate(self.blocks, start=1):
            block.attn.proj.weight.data.div_(math.sqrt(2.0 * layer_id))
            block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer_id))

    def _init_eva02_mim(self) -> None:
        """EVA-02's MIM initialisation (modeling_pretrain.py:109-154)."""
        for param in (self.pos_embed, self.cls_token, self.mask_token):
            if param is not None:
                # The official trunc_normal_ cuts at one std (:27-28).
                nn.init.trunc_normal_(param, std=.02, a=-.02, b=.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        kernel = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(kernel.view(kernel.shape[0], -1))
        dim = self.embed_dims
        scale = math.sqrt(math.log(2 * self.num_layers))
        with torch.no_grad():
            for block in self.blocks:
                qkv, mlp = block.attn.qkv.weight, block.mlp
                if not self.scale_mlp:
                    # xformers' SwiGLU packs w1 and w2 in one (2H, C) w12.
                    if hasattr(mlp, 'fc1_g'):
                        hidden = mlp.fc1_g.out_features
                        std = math.sqrt(2. / (dim + 2 * hidden))
                        mlp.fc1_g.weight.normal_(0, std)
                        mlp.fc1_x.weight.normal_(0, std)
                    continue
                # subln: separate (C, C) q, k and v projections, scaled up
                # with fc*/w* of the MLP and attn.proj (:144-154).
                for part in qkv.chunk(3):
                    nn.init.xavier_normal_(part)
                qkv[2 * dim:].mul_(scale)
                block.attn.proj.weight.mul_(scale)
                for module in mlp.modules():
                    if isinstance(module, nn.Linear):
                        module.weight.mul_(scale)

    @staticmethod
    def _init_module(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=...)`` strictly.

        Missing, unexpected or mis-shaped keys raise one error naming them
        all; keys a task does not use (``mask_token``, heads) are dropped.
        The loader is eva_mm's weight initializer ``PretrainedBackbone``
        (:func:`eva_mm.checkpoints.loading.load_backbone_checkpoint`),
        found by name as mmengine finds its own ``Pretrained``:
        ``eva_mm.checkpoints`` imports the models, never the reverse.
        """
        if self.init_cfg and self.init_cfg.get('type') == 'Pretrained':
            WEIGHT_INITIALIZERS.build(
                dict(self.init_cfg, type='eva_mm.PretrainedBackbone'))(self)
            self._is_init = True
            return
        super().init_weights()

    def _resize_on_load(self, state_dict: dict, prefix: str, *args,
                        **kwargs) -> None:
        """Fit the sized tensors of a loaded checkpoint to this model.

        The load pre-hook of mmengine's ``load_checkpoint`` and
        ``load_state_dict``; see :func:`fit_state_dict`, the one resizing
        path that ``init_cfg=Pretrained`` and the converters take too.
        """
        fit_state_dict(state_dict, self.target_sizes, prefix)

    @property
    def target_sizes(self) -> TargetSizes:
        """This model's sizes, which :func:`fit_state_dict` fits weights to.

        Rel-pos tables are sized for each block's window, or for the grid in
        global blocks.
        """
        lengths, windows = {}, {}
        for i, block in enumerate(self.blocks):
            attn, key = block.attn, f'blocks.{i}.attn.'
            for name in self.DECOMPOSED_REL_POS:
                if hasattr(attn, name):
                    lengths[key + name] = getattr(attn, name).shape[0]
            if hasattr(attn, self.REL_POS_BIAS_TABLE):
                windows[key + self.REL_POS_BIAS_TABLE] = attn.rel_pos_size
        return TargetSizes(
            kernel_shape=tuple(self.patch_embed.proj.weight.shape),
            pos_grid=None if self.pos_embed is None else self.pos_grid,
            with_cls_token=self.cls_token is not None,
            rel_pos_lengths=lengths,
            rel_pos_windows=windows,
            rel_pos_resize=self.rel_pos_resize)

    # ------------------------------------------------------------------
    # Freezing
    # ------------------------------------------------------------------
    def _freeze(self) -> None:
        frozen: List[nn.Module] = []
        if self.freeze_patch_embed or self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        if self.frozen_stages >= 0:
            for param in (self.cls_token, self.pos_embed, self.mask_token):
                if param is not None:
                    param.requires_grad = False
            frozen.extend(self.blocks[:self.frozen_stages])
            if self.frozen_stages >= self.num_layers and self.norm:
                frozen.append(self.norm)
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'EVAViT':
        super().train(mode)
        self._freeze()
        return self

    # ------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------
    def embed(self,
              x: torch.Tensor,
              mask: Optional[torch.Tensor] = None
              ) -> Tuple[torch.Tensor, Tuple[int, ...]]:
        """Patch-embed images, apply the mask, add cls and position.

        Args:
            x: Images (B, C, H, W), or clips (B, C, T, H, W) for the video
                model; H and W multiples of the patch size.
            mask: Optional (B, H/p, W/p) or (B, N) bool mask; True patches are
                replaced by ``mask_token``.

        Returns:
            Tokens (B, extra + N, C) and the patch grid: (H/p, W/p), or
            (T/t, H/p, W/p) for clips.
        """
        x, grid = self.patch_embed(x)
        if mask is not None:
            if self.mask_token is None:
                raise ValueError('A mask was given but the backbone has no '
                                 'mask_token: build it with '
                                 'with_mask_token=True.')
            weight = mask.flatten(1).unsqueeze(-1).type_as(x)
            x = x * (1 - weight) + self.mask_token.type_as(x) * weight
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x],
                          dim=1)
        if self.pos_embed is not None:
            x = x + self._pos_embed_for(grid)
        return self.pos_drop(x), grid

    def _pos_embed_for(self, grid: Tuple[int, ...]) -> torch.Tensor:
        """The position embedding resized (and tiled) to a token grid."""
        extra = self.num_extra_tokens
        if not self.is_video:
            return resize_pos_embed(self.pos_embed, self.patch_resolution,
                                    grid, extra)
        if self.temporal_pos_embed:
            return resize_pos_embed_3d(self.pos_embed, self.pos_grid, grid,
                                       extra)
        spatial = resize_pos_embed(self.pos_embed, self.patch_resolution,
                                   grid[1:], extra)
        # Same spatial position in every token frame: no temporal embedding.
        return torch.cat(
            [spatial[:, :extra], spatial[:, extra:].repeat(1, grid[0], 1)],
            dim=1)

    def _rope_for(self, block: EVABlock, grid: Tuple[int, ...],
                  device: torch.device) -> Optional[torch.Tensor]:
        """The rotary embedding of what one attention call of ``block`` sees.

        A window block's RoPE is computed for its window, a global block's
        for the whole grid, each scaled to ``ref_feat_shape`` (the official
        detection backbone's rope_win / rope_glb,
        EVA-02/det/detectron2/modeling/backbone/vit.py:365-396).
        """
        if not self.use_rot_pos_emb:
            return None
        size = (block.window_size, ) * 2 if block.window_size else grid[-2:]
        key = (*size, device)
        if key not in self._rope_cache:
            # EVA-02's VisionRotaryEmbeddingFast (EVA-02/asuka/rope.py:
            # 96-135): 'lang' frequencies theta**(-4i/head_dim), theta 1e4,
            # per axis, positions t * pt_seq_len / ft_seq_len, pairs rotated
            # interleaved. timm's builder of RotaryEmbeddingCat
            # (in_pixels=False) computes the same (test_eva02.py shows it).
            # A table made under inference_mode could not serve a later
            # training step: build it as a normal tensor.
            with torch.inference_mode(False):
                sin, cos = build_rotary_pos_embed(
                    list(size),
                    dim=self.embed_dims // self.arch_settings['num_heads'],
                    in_pixels=False,
                    ref_feat_shape=self.ref_feat_shape,
                    device=device)
                self._rope_cache[key] = torch.cat([sin, cos], dim=-1)
        return self._rope_cache[key]

    def _positions_for(self, block: EVABlock, grid: Tuple[int, ...],
                       shared: dict, device: torch.device) -> TokenPositions:
        return TokenPositions(grid, self._rope_for(block, grid, device),
                              shared)

    def _checkpoints(self, block: EVABlock) -> bool:
        """Whether ``with_cp`` recomputes all of ``block`` (``'attn'`` is the
        block's own option)."""
        if self.with_cp == 'global':
            return not block.window_size
        return self.with_cp in (True, 'all')

    def _run_block(self, block: EVABlock, x: torch.Tensor,
                   grid: Tuple[int, ...], shared: dict) -> torch.Tensor:
        """One block on the tokens of ``grid``.

        Args:
            block: One of :attr:`blocks`.
            x: Tokens (B, extra + N, C).
            grid: Their patch grid, with time for video.
            shared: The forward's store of shape-only tensors (see
                :class:`TokenPositions`), the same dict for every block.
        """
        positions = self._positions_for(block, grid, shared, x.device)
        if self._checkpoints(block) and self.training and x.requires_grad:
            return checkpoint(
                block, x, positions=positions, use_reentrant=False)
        return block(x, positions=positions)

    def _format(self, x: torch.Tensor, grid: Tuple[int, ...]) -> torch.Tensor:
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patches = x[:, self.num_extra_tokens:]
        if self.out_type == 'featmap':
            b, _, c = patches.shape
            return patches.transpose(1, 2).reshape(b, c, *grid).contiguous()
        pooled = patches.mean(dim=1)
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled

    def forward_features(self,
                         x: torch.Tensor,
                         mask: Optional[torch.Tensor] = None
                         ) -> torch.Tensor:
        """All tokens (B, extra + N, C) after the last block and final norm."""
        x, grid = self.embed(x, mask)
        shared: dict = {}
        for block in self.blocks:
            x = self._run_block(block, x, grid, shared)
        return self.norm(x) if self.norm is not None else x

    def forward(self,
                x: torch.Tensor,
                mask: Optional[torch.Tensor] = None
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Outputs of the blocks in ``out_indices``, formatted by out_type.

        The final norm applies to the last block's output only.
        """
        x, grid = self.embed(x, mask)
        outs = []
        last = self.num_layers - 1
        shared: dict = {}
        for i, block in enumerate(self.blocks[:self.out_indices[-1] + 1]):
            x = self._run_block(block, x, grid, shared)
            if i in self.out_indices:
                out = x
                if i == last and self.norm is not None:
                    out = self.norm(x)
                outs.append(self._format(out, grid))
        return tuple(outs) if self.tuple_output else outs[0]

    # ------------------------------------------------------------------
    # Layer-wise learning-rate decay
    # ------------------------------------------------------------------
    def get_layer_depth(self, param_name: str,
                        prefix: str = '') -> Tuple[int, int]:
        """The layer id of a parameter for layer-wise lr decay.

        Embeddings (patch, position, cls, mask) are layer 0, block ``i`` is
        layer ``i + 1``, everything after the blocks (final norm, and any
        parameter outside the backbone) is the last layer. This one rule
        serves every task through
        :class:`eva_mm.engine.LayerDecayOptimWrapperConstructor`.

        Args:
            param_name: Parameter name, including ``prefix``.
            prefix: The backbone's prefix in the full model (``backbone.``).

        Returns:
            ``(layer_id, num_layers)`` with ``num_layers = depth + 2``.
        """
        num_layers = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed', 'mask_token') or \
                name.startswith('patch_embed'):
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    # ------------------------------------------------------------------
    # Parameter declarations, read by the checkpoint loaders, the
    # converters and the optimiser constructor
    # ------------------------------------------------------------------
    #: The attention's relative position tables, by parameter name: the
    #: decomposed ViTDet tables (one per axis, 2 * size - 1 long) and the
    #: BEiT bias table of a window. Their length follows the window or grid
    #: (:attr:`target_sizes`).
    DECOMPOSED_REL_POS: Tuple[str, ...] = ('rel_pos_h', 'rel_pos_w')
    REL_POS_BIAS_TABLE = 'relative_position_bias_table'
    REL_POS_TABLES = DECOMPOSED_REL_POS + (REL_POS_BIAS_TABLE, )
    #: Each block's layer scale.
    LAYER_SCALES = ('gamma_1', 'gamma_2')
    #: Modules a subclass adds around the ViT (e.g. ViT-Adapter's), which a
    #: pre-trained ViT file never holds.
    task_modules: Tuple[str, ...] = ()

    def no_weight_decay(self) -> Set[str]:
        """The parameters trained without weight decay (timm's API).

        ``pos_embed`` and ``cls_token``, as the official EVA models declare
        (EVA-01/eva/modeling_finetune.py:453-454,
        EVA-02/asuka/modeling_finetune.py:584-585), plus the mask token
        and the relative position tables (timm's BEiT exempts its
        ``relative_position_bias_table`` the same way).
        :class:`~eva_mm.engine.LayerDecayOptimWrapperConstructor` reads
        this unless its config names the parameters itself.

        Returns:
            Parameter names relative to this module.
        """
        return {
            name
            for name, _ in self.named_parameters()
            if name in ('pos_embed', 'cls_token', 'mask_token')
            or name.rsplit('.', 1)[-1] in self.REL_POS_TABLES
        }

    def fresh_keys(self) -> Set[str]:
        """The state-dict entries a pre-trained ViT file never holds.

        The tasks add them to the pre-trained ViT: relative position tables
        (zero-initialised), the MIM mask token, the pooled ``fc_norm``,
        layer scale and the :attr:`task_modules` (with their buffers). A
        pretrained load keeps them at their initialisation instead of
        reporting them missing.

        Returns:
            State-dict keys relative to this module.
        """
        return {
            key
            for key in self.state_dict(keep_vars=True)
            if key == 'mask_token' or key.startswith('fc_norm.')
            or key.split('.', 1)[0] in self.task_modules
            or key.rsplit('.', 1)[-1] in self.REL_POS_TABLES +
            self.LAYER_SCALES
        }
