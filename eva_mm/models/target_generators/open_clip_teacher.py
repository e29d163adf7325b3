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
    its final LayerNorm (``ln_post``) and its output projection (``proj``),
    i.e. in CLIP's joint image-text space. open_clip applies ``proj`` to the
    pooled token only, so the tower is run block by block here and the
    projection is applied to every patch token; the cls token is dropped.

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

    Args:
        model_name: An open_clip model name (``open_clip.list_models()``),
            e.g. ``'ViT-L-14'``. Ignored when ``model_cfg`` is given.
        pretrained: ``None`` (random weights), an open_clip pretrained tag
            (``'openai'``, ``'laion2b_s32b_b82k'``, ...; downloaded or read
            from ``cache_dir``) or a local weights file of the whole CLIP
            model or of its vision tower alone.
        model_cfg: A custom open_clip model config (``embed_dim`` and
            ``vision_cfg``, as in open_clip's ``model_configs/*.json``); only
            the vision tower is built.
        quick_gelu: Use QuickGELU, as OpenAI's CLIP weights were trained
            with; open_clip's ``-quickgelu`` names set it too.
        image_size: Override the tower's input size (its position
            embedding is then interpolated by open_clip when loading).
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
        from open_clip.transformer import VisionTransformer
        if model_cfg is not None:
            self.visual = self._build_tower(model_cfg, quick_gelu, image_size)
            if pretrained is not None:
                self._load_tower_file(pretrained)
        else:
            # Building the whole model lets open_clip resolve names, tags,
            # files and its own weight formats; the text tower is dropped.
            clip = open_clip.create_model(
                model_name,
                pretrained=pretrained,
                force_quick_gelu=quick_gelu,
                force_image_size=image_size,
                cache_dir=cache_dir)
            self.visual = clip.visual
        if not isinstance(self.visual, VisionTransformer) or \
                self.visual.attn_pool is not None or \
                self.visual.final_ln_after_pool or self.visual.proj is None:
            raise ValueError(
                'OpenCLIPTeacher needs a plain open_clip VisionTransformer '
                'with ln_post on every token and a proj matrix (no timm '
                'tower, attentional pooling or final_ln_after_pool); got '
                f'{type(self.visual).__name__} for {model_name!r}.')
        self.visual.requires_grad_(False)
        self.eval()

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
        from eva_mm.models.utils.checkpoint import (load_state_dict_file,
                                                    rename_prefix)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f'No teacher weights at {path!r}: with model_cfg, pretrained '
                'must be a local file.')
        state = load_state_dict_file(path)
        if any(key.startswith('visual.') for key in state):
            state = rename_prefix(state, 'visual.')
        self.visual.load_state_dict(state, strict=True)

    @property
    def patch_grid(self) -> Tuple[int, int]:
        """The patch grid of the tower's input size."""
        return tuple(self.visual.grid_size)

    @property
    def out_channels(self) -> int:
        """The target dimension, CLIP's embedding width."""
        return self.visual.proj.shape[1]

    def _apply(self, fn: Callable, *args, **kwargs) -> 'OpenCLIPTeacher':
        # Where fn sends an fp32 tensor tells the target device; casting the
        # weights themselves (and back) would round them to fp16/bf16.
        probe = fn(torch.zeros((), device=self.visual.proj.device))
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
            x = visual._embeds(images.to(visual.proj.dtype))
            x = visual.transformer(x)
            x = visual.ln_post(x[:, 1:])
            return x @ visual.proj
