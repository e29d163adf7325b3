"""The frozen CLIP vision tower whose features EVA's student reconstructs."""
import contextlib
import os
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn

from eva_mm.registry import MODELS


@MODELS.register_module()
class OpenCLIPTeacher(nn.Module):
    """Per-patch CLIP features of an open_clip vision tower, frozen.

    EVA regresses the last layer's patch tokens of a CLIP image encoder after
    its final LayerNorm and its output projection, i.e. in CLIP's joint
    image-text space; open_clip applies both to the pooled token only, so
    here they are applied to every patch token and the prefix (cls) tokens
    are dropped. Two kinds of tower:

    - open_clip's own ``VisionTransformer`` (OpenAI's CLIP, EVA-01's
      teacher): ``ln_post`` and the ``proj`` matrix.
    - a timm tower (``TimmModel``: EVA-CLIP, e.g. ``'EVA01-g-14'``, EVA-02's
      teacher, and the EVA-02-CLIP towers): the trunk's
      ``forward_features`` (its final norm included), then per token what
      its head does to the pooled token (``fc_norm``, ``head``) and
      open_clip's extra projection, if any. For EVA-CLIP-g this is EVA-02's
      target exactly: ``head(norm(x))[:, 1:]``
      (EVA-02/asuka/eva_clip/vit_model.py:347-368, called by
      clip_wrapper.py:23-26 and engine_for_pretraining.py:117-118).
      Attention-pooled towers have no per-token head and are refused.

    The teacher is never trained: its parameters do not require grad, it
    stays in eval mode whatever ``train()`` is called with, and it runs
    without autograd. :class:`eva_mm.models.EVAMIM` keeps it outside the
    student's module tree so that it is in no checkpoint and no optimizer.

    Precision as the official code (EVA-01/eva/engine_for_pretraining.py:
    107-108, ``torch.no_grad(), torch.cuda.amp.autocast()`` around an fp32
    teacher): the weights stay fp32 whatever the model is cast to (``.to``,
    ``.cuda`` and the like move them, ``.half()``/``.bfloat16()`` leave
    their dtype alone), and the forward runs under autocast in the dtype of
    fp16/bf16 input images (DeepSpeed's ``inputs_to_half``), or inside the
    caller's autocast (mmengine's AMP) for fp32 images.

    mmpretrain's ``CLIPGenerator`` does not fit: it builds its own copy of
    OpenAI's CLIP from a JIT file and returns un-projected tokens.
    open_clip's ``forward_intermediates`` does not either: it returns the
    blocks' outputs without the final norm and projection.

    Args:
        model_name: An open_clip model name (``open_clip.list_models()``),
            e.g. ``'ViT-L-14'`` or ``'EVA01-g-14'``. Ignored when
            ``model_cfg`` is given.
        pretrained: ``None`` (random weights), an open_clip pretrained tag
            (``'openai'``, ``'laion2b_s32b_b82k'``, ...; downloaded or read
            from ``cache_dir``) or a local weights file of the whole CLIP
            model or of its vision tower alone.
        model_cfg: A custom open_clip model config (``embed_dim`` and
            ``vision_cfg``, as in open_clip's ``model_configs/*.json``,
            ``timm_model_name`` for a timm tower); only the vision tower is
            built.
        quick_gelu: Use QuickGELU, as OpenAI's CLIP weights were trained
            with; open_clip's ``-quickgelu`` names set it too (timm towers
            keep their own activation).
        image_size: Override the tower's input size (its position
            embedding is then interpolated by open_clip, or by timm's
            ``set_input_size`` after loading for a timm tower).
        cache_dir: Where open_clip looks for downloaded weights.
    """

    def __init__(self,
                 model_name: str = 'ViT-L-14',
                 pretrained: Optional[str] = None,
                 model_cfg: Optional[dict] = None,
                 quick_gelu: bool = False,
                 image_size: Optional[int] = None,
                 cache_dir: Optional[str] = None) -> None:
        super().__init__()
        import open_clip
        if model_cfg is not None:
            self.visual = self._build_tower(model_cfg, quick_gelu, image_size)
            if pretrained is not None:
                self._load_tower_file(pretrained)
            if image_size is not None and self._is_timm:
                # As open_clip's factory: timm resizes after loading.
                self.visual.set_input_size(image_size)
        else:
            # Building the whole model lets open_clip resolve names, tags,
            # files and its own weight formats; the text tower is dropped.
            # Built where tensors are created by default (open_clip would
            # move it to the CPU), so that torch.device('meta') works.
            clip = open_clip.create_model(
                model_name,
                device=torch.get_default_device(),
                pretrained=pretrained,
                force_quick_gelu=quick_gelu,
                force_image_size=image_size,
                cache_dir=cache_dir)
            self.visual = clip.visual
        self._check_tower(model_name)
        self.visual.requires_grad_(False)
        self.eval()

    @property
    def _is_timm(self) -> bool:
        from open_clip.timm_model import TimmModel
        return isinstance(self.visual, TimmModel)

    def _check_tower(self, model_name: str) -> None:
        from open_clip.transformer import VisionTransformer
        visual = self.visual
        if self._is_timm:
            trunk = visual.trunk
            per_token = all(
                hasattr(trunk, name)
                for name in ('num_prefix_tokens', 'fc_norm', 'head_drop',
                             'head')) and getattr(trunk, 'attn_pool',
                                                  None) is None
            if per_token and 'pool' not in visual.head:
                return
            raise ValueError(
                'OpenCLIPTeacher needs a timm ViT tower (num_prefix_tokens, '
                'fc_norm, head_drop and head, as timm.models.Eva and '
                'VisionTransformer) '
                'whose pooling is a token or the mean, not attention '
                f'pooling; got {type(trunk).__name__} for {model_name!r}.')
        if not isinstance(visual, VisionTransformer) or \
                visual.attn_pool is not None or \
                visual.final_ln_after_pool or visual.proj is None:
            raise ValueError(
                'OpenCLIPTeacher needs a plain open_clip VisionTransformer '
                'with ln_post on every token and a proj matrix (no '
                'attentional pooling or final_ln_after_pool), or a timm '
                f'tower; got {type(visual).__name__} for {model_name!r}.')

    @staticmethod
    def _build_tower(model_cfg: dict, quick_gelu: bool,
                     image_size: Optional[int]) -> nn.Module:
        from open_clip.model import _build_vision_tower
        vision_cfg = dict(model_cfg['vision_cfg'])
        if image_size is not None:
            vision_cfg['image_size'] = image_size
        return _build_vision_tower(
            model_cfg['embed_dim'], vision_cfg, quick_gelu=quick_gelu)

    def _load_tower_file(self, path: str) -> None:
        # open_clip's own reader (weights_only, safetensors, 'state_dict'
        # and DDP's 'module.' unwrapped) for its own tower.
        from open_clip.factory import load_state_dict
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f'No teacher weights at {path!r}: with model_cfg, pretrained '
                'must be a local file.')
        state = load_state_dict(path)
        # A whole CLIP model's file holds the tower under 'visual.'.
        if any(key.startswith('visual.') for key in state):
            state = {
                key[len('visual.'):]: value
                for key, value in state.items() if key.startswith('visual.')
            }
        self.visual.load_state_dict(state, strict=True)

    @property
    def patch_grid(self) -> Tuple[int, int]:
        """The patch grid of the tower's input size."""
        if self._is_timm:
            return tuple(self.visual.trunk.patch_embed.grid_size)
        return tuple(self.visual.grid_size)

    @property
    def out_channels(self) -> int:
        """The target dimension, CLIP's embedding width."""
        if not self._is_timm:
            return self.visual.proj.shape[1]
        linears = [
            m for m in (*self.visual.trunk.head.modules(),
                        *self.visual.head.modules())
            if isinstance(m, nn.Linear)
        ]
        return linears[-1].out_features if linears else \
            self.visual.trunk.num_features

    @property
    def _weight(self) -> torch.Tensor:
        return next(self.visual.parameters())

    def _apply(self, fn: Callable, *args, **kwargs) -> 'OpenCLIPTeacher':
        # Where fn sends an fp32 tensor tells the target device; casting the
        # weights themselves (and back) would round them to fp16/bf16.
        probe = fn(torch.zeros((), device=self._weight.device))
        return super()._apply(lambda t: t.to(probe.device), *args, **kwargs)

    def train(self, mode: bool = True) -> 'OpenCLIPTeacher':
        # Frozen: dropout and patch dropout stay off during student training.
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Targets for images normalised with CLIP's mean and std.

        Args:
            images: (B, 3, H, W) images at the tower's input size.

        Returns:
            (B, N, D) projected patch features, N = grid cells, row-major;
            in the autocast dtype when one is active.
        """
        if images.dtype in (torch.float16, torch.bfloat16):
            precision = torch.autocast(images.device.type, dtype=images.dtype)
        else:
            # fp32 images: keep whatever autocast the caller runs under.
            precision = contextlib.nullcontext()
        visual = self.visual
        with precision:
            images = images.to(self._weight.dtype)
            if not self._is_timm:
                x = visual._embeds(images)
                x = visual.transformer(x)
                x = visual.ln_post(x[:, 1:])
                return x @ visual.proj
            trunk = visual.trunk
            x = trunk.forward_features(images)[:, trunk.num_prefix_tokens:]
            # Token-wise, what forward_head and open_clip's head do to the
            # pooled token (dropout layers are off in eval mode).
            x = trunk.head(trunk.head_drop(trunk.fc_norm(x)))
            return visual.head(x)
