"""EVA masked image modelling: reconstruct CLIP features of masked patches."""
import math
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmpretrain.models import BaseSelfSupervisor
from mmpretrain.structures import DataSample

from eva_mm.registry import MODELS


def _build(cfg: Union[dict, nn.Module]) -> nn.Module:
    return cfg if isinstance(cfg, nn.Module) else MODELS.build(cfg)


def _trunc_normal_at_std(tensor: torch.Tensor, std: float) -> None:
    # The official trunc_normal_ cuts at +-std, not timm's +-2 (absolute):
    # EVA-01/eva/modeling_pretrain.py:24-25.
    nn.init.trunc_normal_(tensor, mean=0., std=std, a=-std, b=std)


def official_mim_init(student: Optional[nn.Module], head: nn.Module,
                      std: float) -> None:
    """EVA-01's initialisation of the MIM student and its ``lm_head``.

    As ``VisionTransformerForMaskedImageModeling.__init__``
    (EVA-01/eva/modeling_pretrain.py:74-80, 95-114): the position
    embedding, cls and mask tokens, every Linear weight (the head's too)
    and every Conv2d weight (the patch embedding) ~ N(0, std) truncated at
    +-std, their biases 0, LayerNorms 1 and 0; then each block's attention
    output projection and second MLP layer divided by sqrt(2 * depth).

    Args:
        student: An :class:`EVAViT`; ``None`` initialises the head only.
        head: The prediction head (its Linear layers are initialised).
        std: ``init_std`` (0.015 for EVA-g, 0.02 otherwise).
    """
    modules = list(head.modules())
    if student is not None:
        modules = list(student.modules()) + modules
    with torch.no_grad():
        for name in ('pos_embed', 'cls_token', 'mask_token'):
            param = getattr(student, name, None)
            if param is not None:
                _trunc_normal_at_std(param, std)
        for module in modules:
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                _trunc_normal_at_std(module.weight, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for depth, block in enumerate(getattr(student, 'blocks', ()),
                                      start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * depth))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * depth))


def _scale_grad(module: nn.Module, args: tuple, output: Any,
                scale: float) -> Any:
    """Forward hook: the patch tokens with their gradient scaled."""
    tokens = output[0] if isinstance(output, tuple) else output
    tokens = tokens.detach() * (1. - scale) + tokens * scale
    return (tokens, *output[1:]) if isinstance(output, tuple) else tokens


@MODELS.register_module()
class EVAMIM(BaseSelfSupervisor):
    """EVA-01 and EVA-02 pre-training (arXiv:2211.07636, 2303.11331).

    The student backbone (an :class:`EVAViT` with ``with_mask_token=True``
    and ``out_type='raw'``) sees the image with its masked patches replaced
    by the mask token; the head maps its masked patch tokens to the frozen
    teacher's features of the same, unmasked image. EVA-02 is the same
    algorithm with an EVA-02 student initialised as the official one
    (``EVAViT(init_mode='eva02-mim')``, a Xavier-normal head,
    ``init_std=None``), an EVA-CLIP teacher (a timm tower) and
    ``patch_embed_grad_scale=0.1`` (EVA-02/asuka/modeling_pretrain.py,
    engine_for_pretraining.py).

    The teacher (``target_generator``) is built here but kept out of the
    module tree, unlike in ``BaseSelfSupervisor``: mmengine's optimizer
    constructors, checkpoints, DDP and DeepSpeed all walk the module tree, and
    a frozen 300M-parameter CLIP tower must reach none of them. It still
    follows the model's device moves, but not its dtype casts: as the
    official teacher it stays fp32 and runs under autocast
    (EVA-01/eva/engine_for_pretraining.py:107-108), also when ``model.half()``
    or a DeepSpeed fp16/bf16 engine casts the student.

    Args:
        backbone: The student config.
        head: The head config, e.g. :class:`EVAMIMHead`.
        target_generator: The teacher config, e.g. :class:`OpenCLIPTeacher`.
        data_preprocessor: Defaults to mmpretrain's
            ``SelfSupDataPreprocessor``.
        init_std: When given, :meth:`init_weights` initialises the student
            and head as the official code (:func:`official_mim_init`: a
            normal truncated at +-``init_std``; 0.015 for EVA-g, 0.02 for
            smaller students). ``None`` keeps the modules' own
            initialisation (std 0.02, truncated at +-2; PyTorch's default
            for the patch embedding).
        patch_embed_grad_scale: The fraction of the gradient that reaches
            the patch embedding: its output is ``x.detach() * (1 - s) + x *
            s``, the official ``--stop_grad_conv1`` with s = 0.1
            (EVA-02/asuka/modeling_pretrain.py:213-214, set in every
            official EVA-02 run). 1.0 leaves it alone (EVA-01).
        init_cfg: Initialisation of the student and head.
    """

    def __init__(self,
                 backbone: Union[dict, nn.Module],
                 head: Union[dict, nn.Module],
                 target_generator: Union[dict, nn.Module],
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_std: Optional[float] = None,
                 patch_embed_grad_scale: float = 1.0,
                 init_cfg: Optional[dict] = None) -> None:
        # Built here because BaseSelfSupervisor builds with mmpretrain's
        # registry, which cannot see eva_mm's unscoped names; its default
        # preprocessor is named with its scope so that any default scope
        # (mmengine's Runner sets one) finds it.
        if not isinstance(data_preprocessor, nn.Module):
            data_preprocessor = dict(data_preprocessor or {})
            data_preprocessor.setdefault('type',
                                         'mmpretrain.SelfSupDataPreprocessor')
        super().__init__(
            backbone=_build(backbone),
            head=_build(head),
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        if init_std is not None and init_std <= 0:
            raise ValueError(f'init_std must be positive, got {init_std}.')
        self.init_std = init_std
        if not 0. < patch_embed_grad_scale <= 1.:
            raise ValueError('patch_embed_grad_scale must be in (0, 1], got '
                             f'{patch_embed_grad_scale}.')
        if patch_embed_grad_scale < 1.:
            self.backbone.patch_embed.register_forward_hook(
                partial(_scale_grad, scale=patch_embed_grad_scale))
        target_generator = _build(target_generator)
        # object.__setattr__ bypasses nn.Module's submodule registration.
        object.__setattr__(self, 'target_generator', target_generator)

    def init_weights(self) -> None:
        """The modules' init_cfg, then the official init with ``init_std``.

        A student with a ``Pretrained`` init_cfg keeps its loaded weights;
        only the head is initialised then.
        """
        super().init_weights()
        if self.init_std is None:
            return
        backbone_cfg = getattr(self.backbone, 'init_cfg', None) or {}
        pretrained = backbone_cfg.get('type') == 'Pretrained'
        official_mim_init(None if pretrained else self.backbone, self.head,
                          self.init_std)

    def _apply(self, fn: Callable, *args, **kwargs) -> 'EVAMIM':
        # The teacher follows device moves but stays fp32 (see
        # OpenCLIPTeacher._apply).
        self.target_generator._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """All student tokens of unmasked images."""
        return self.backbone(inputs, mask=None)

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """Negative cosine similarity over the masked patches.

        Args:
            inputs: (B, 3, H, W) normalised images.
            data_samples: Samples with a (h, w) patch ``mask`` each.

        Returns:
            ``dict(loss=...)``.
        """
        mask = torch.stack([sample.mask for sample in data_samples])
        mask = mask.flatten(1).to(inputs.device, torch.bool)
        target = self.target_generator(inputs)
        if target.shape[1] != mask.shape[1]:
            raise ValueError(
                f'The teacher gives {target.shape[1]} patch features but the '
                f'mask has {mask.shape[1]} patches: the teacher grid '
                f'{self.target_generator.patch_grid}, the student grid and '
                "the mask generator's input_size must agree.")
        tokens = self.backbone(inputs, mask=mask)
        if isinstance(tokens, tuple):
            tokens = tokens[-1]
        patches = tokens[:, self.backbone.num_extra_tokens:]
        return dict(loss=self.head.loss(patches, target, mask))
