"""Mixed precision where mmengine's AmpOptimWrapper does not run: the CPU."""
from contextlib import contextmanager
from typing import Iterator, Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from eva_mm.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """An OptimWrapper whose forward runs under ``torch.autocast``.

    mmengine's ``AmpOptimWrapper`` asserts a GPU. On CPU, bf16 autocast needs
    no loss scaling (bf16 has fp32's range) and is several times faster than
    fp32 on CPUs with AMX/AVX-512 bf16, so ``tools/train.py --amp`` uses this
    wrapper there.

    Args:
        dtype: Autocast dtype, ``'bfloat16'`` or a ``torch.dtype``.
        device_type: Autocast device type; defaults to ``'cpu'``.
        **kwargs: Passed to :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self,
                 dtype: Union[str, torch.dtype] = 'bfloat16',
                 device_type: str = 'cpu',
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.device_type = device_type

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with super().optim_context(model), torch.autocast(
                self.device_type, dtype=self.dtype):
            yield
