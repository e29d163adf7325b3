"""EVA masked image modelling: reconstruct CLIP features of masked patches."""
from typing import Callable, Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmpretrain.models import BaseSelfSupervisor
from mmpretrain.structures import DataSample

from eva_mm.registry import MODELS


def _build(cfg: Union[dict, nn.Module]) -> nn.Module:
    return cfg if isinstance(cfg, nn.Module) else MODELS.build(cfg)


@MODELS.register_module()
class EVAMIM(BaseSelfSupervisor):
    """EVA-01 pre-training (Fang et al., arXiv:2211.07636).

    The student backbone (an :class:`EVAViT` with ``with_mask_token=True``
    and ``out_type='raw'``) sees the image with its masked patches replaced
    by the mask token; the head maps its masked patch tokens to the frozen
    teacher's features of the same, unmasked image.

    The teacher (``target_generator``) is built here but kept out of the
    module tree, unlike in ``BaseSelfSupervisor``: mmengine's optimizer
    constructors, checkpoints, DDP and DeepSpeed all walk the module tree, and
    a frozen 300M-parameter CLIP tower must reach none of them. It still
    follows the model's device and dtype moves.

    Args:
        backbone: The student config.
        head: The head config, e.g. :class:`EVAMIMHead`.
        target_generator: The teacher config, e.g. :class:`OpenCLIPTeacher`.
        data_preprocessor: Defaults to mmpretrain's
            ``SelfSupDataPreprocessor``.
        init_cfg: Initialisation of the student and head.
    """

    def __init__(self,
                 backbone: Union[dict, nn.Module],
                 head: Union[dict, nn.Module],
                 target_generator: Union[dict, nn.Module],
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
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
        target_generator = _build(target_generator)
        # object.__setattr__ bypasses nn.Module's submodule registration.
        object.__setattr__(self, 'target_generator', target_generator)

    def _apply(self, fn: Callable, *args, **kwargs) -> 'EVAMIM':
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
