"""mmengine's DeepSpeedStrategy for recent DeepSpeed releases and CPUs.

Written against mmengine 0.10.7's ``mmengine/_strategy/deepspeed.py``:
``DeepSpeedStrategy.__init__`` (lines 261-319) is replaced,
``register_deepspeed_optimizers`` (lines 30-60) is re-done without the 1-bit
import, ``_setup_distributed`` (lines 329-345) and ``_wrap_model`` (lines
399-411) are wrapped.
"""
import os
import socket
from typing import Any, List, Optional, Union

import torch
import torch.distributed as torch_dist
import torch.nn as nn
from mmengine import __version__ as MMENGINE_VERSION
from mmengine._strategy import BaseStrategy
from mmengine._strategy import DeepSpeedStrategy as MMDeepSpeedStrategy
from mmengine.registry import OPTIMIZERS
from mmengine.utils import digit_version

from eva_mm.registry import STRATEGIES


# The mmengine releases whose DeepSpeedStrategy.__init__ the one below
# replaces line for line (checked against 0.10.7; 0.10.x patch releases keep
# the file). [low, high).
MMENGINE_VERSIONS = ('0.10.7', '0.11.0')


def check_mmengine_version(version: str = MMENGINE_VERSION) -> None:
    """Refuse an mmengine release the strategy was not written for.

    ``DeepSpeedStrategy.__init__`` below re-does its parent's wholesale, so
    a release that changes the parent's would silently lose those changes.

    Args:
        version: The mmengine version to check; the installed one by default.

    Raises:
        RuntimeError: ``version`` is outside :data:`MMENGINE_VERSIONS`.
    """
    low, high = MMENGINE_VERSIONS
    if digit_version(low) <= digit_version(version) < digit_version(high):
        return
    raise RuntimeError(
        f'eva_mm.DeepSpeedStrategy replaces the __init__ of mmengine '
        f'{low}\'s DeepSpeedStrategy (mmengine/_strategy/deepspeed.py:'
        f'261-319) and supports mmengine >={low},<{high}; mmengine '
        f'{version} is installed. Install the pinned mmengine '
        '(requirements/), or compare that file of the installed release '
        'with eva_mm/engine/strategies/deepspeed.py and widen '
        'MMENGINE_VERSIONS there.')


def register_deepspeed_optimizers() -> List[str]:
    """Register the DeepSpeed optimizers this DeepSpeed release has.

    mmengine imports ``deepspeed.runtime.fp16.onebit`` unconditionally; the
    1-bit optimizers left DeepSpeed after 0.19.0, so that import fails.

    Returns:
        The names registered in mmengine's ``OPTIMIZERS``.
    """
    import importlib
    candidates = {
        'deepspeed.ops.adam': ('DeepSpeedCPUAdam', 'FusedAdam'),
        'deepspeed.ops.lamb': ('FusedLamb', ),
        'deepspeed.runtime.fp16.onebit': ('OnebitAdam', 'OnebitLamb',
                                          'ZeroOneAdam'),
    }
    names = []
    for module_name, classes in candidates.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in classes:
            if hasattr(module, name) and name not in OPTIMIZERS:
                OPTIMIZERS.register_module(module=getattr(module, name))
                names.append(name)
    return names


def _plain(value: Any) -> Any:
    """``value`` with every mapping a dict and every sequence a list."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@STRATEGIES.register_module()
class DeepSpeedStrategy(MMDeepSpeedStrategy):
    """mmengine 0.10.7's DeepSpeedStrategy with four fixes.

    1. It no longer imports DeepSpeed's removed 1-bit optimizers.
    2. Without a GPU, the process group is set up with gloo by DeepSpeed
       itself; mmengine's ``init_dist`` calls ``torch.cuda.set_device``
       first and crashes every ``--launcher pytorch`` CPU run. DeepSpeed then
       runs on its CPU accelerator (ZeRO and bf16 work there).
    3. A single process started without a launcher (``python
       tools/train.py``) gets a one-process group, which
       ``deepspeed.initialize`` needs.
    4. The DeepSpeed config is kept as plain dicts: DeepSpeed pickles it into
       every checkpoint, and mmengine's ``ConfigDict`` there makes
       ``torch.load(weights_only=True)`` (resume, export) refuse the file.

    fp16 is refused on CPU with a clear error: DeepSpeed's CPU accelerator
    does not support it (use the bf16 config).

    Args:
        config: A DeepSpeed config dict or JSON file; the sections below
            override its entries.
        zero_optimization: DeepSpeed's ``zero_optimization`` section.
        gradient_clipping: Global gradient-norm clipping.
        fp16: DeepSpeed's ``fp16`` section (GPU only).
        inputs_to_half: Keys of the preprocessed data cast to the model's
            dtype (``['inputs']`` for fp16/bf16).
        bf16: DeepSpeed's ``bf16`` section.
        amp: DeepSpeed's ``amp`` section.
        activation_checkpointing: DeepSpeed's section of that name.
        aio: DeepSpeed's ``aio`` section.
        train_micro_batch_size_per_gpu: Per-process batch size.
        gradient_accumulation_steps: Micro-batches per optimizer step.
        steps_per_print: DeepSpeed's own logging interval.
        exclude_frozen_parameters: Leave frozen parameters out of saved
            checkpoints.
        **kwargs: :class:`mmengine._strategy.BaseStrategy` arguments.
    """

    def __init__(self,
                 *,
                 config: Union[str, dict, None] = None,
                 zero_optimization: Optional[dict] = None,
                 gradient_clipping: Optional[float] = None,
                 fp16: Optional[dict] = None,
                 inputs_to_half: Optional[List[Union[int, str]]] = None,
                 bf16: Optional[dict] = None,
                 amp: Optional[dict] = None,
                 activation_checkpointing: Optional[dict] = None,
                 aio: Optional[dict] = None,
                 train_micro_batch_size_per_gpu: Optional[int] = None,
                 gradient_accumulation_steps: Optional[int] = None,
                 steps_per_print: int = 10**13,
                 exclude_frozen_parameters: Optional[bool] = None,
                 **kwargs) -> None:
        # The parent's __init__ ends in the failing optimizer registration,
        # so its config assembly is done here instead.
        check_mmengine_version()
        BaseStrategy.__init__(self, **kwargs)
        self.config = self._parse_config(config)
        sections = dict(
            zero_optimization=zero_optimization,
            gradient_clipping=gradient_clipping,
            fp16=fp16,
            bf16=bf16,
            amp=amp,
            activation_checkpointing=activation_checkpointing,
            aio=aio,
            train_micro_batch_size_per_gpu=train_micro_batch_size_per_gpu,
            gradient_accumulation_steps=gradient_accumulation_steps)
        self.config.update({
            key: value
            for key, value in sections.items() if value is not None
        })
        self.config.setdefault('gradient_accumulation_steps', 1)
        # DeepSpeed pickles its config into every checkpoint; plain dicts
        # (not mmengine ConfigDicts) keep them loadable with weights_only.
        self.config = _plain(self.config)
        # DeepSpeed's own step log would duplicate mmengine's.
        self.config['steps_per_print'] = steps_per_print
        if (self.config.get('fp16') or {}).get('enabled', False) and \
                not torch.cuda.is_available():
            raise ValueError(
                'DeepSpeed does not support fp16 training on CPU: its CPU '
                'accelerator has no fp16 kernels. Use the bf16 variant of '
                'the config (strategy.bf16=dict(enabled=True) without '
                'strategy.fp16) or run on a GPU.')
        self._inputs_to_half = inputs_to_half
        self.exclude_frozen_parameters = exclude_frozen_parameters
        register_deepspeed_optimizers()

    def _setup_distributed(self,
                           launcher: Optional[str] = None,
                           backend: str = 'nccl',
                           **kwargs) -> None:
        if torch.cuda.is_available():
            super()._setup_distributed(launcher, backend, **kwargs)
            return
        import deepspeed
        deepspeed.init_distributed(dist_backend='gloo', **kwargs)

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        if not torch_dist.is_initialized():
            for key, value in (('MASTER_ADDR', '127.0.0.1'),
                               ('MASTER_PORT', str(_free_port())),
                               ('RANK', '0'), ('LOCAL_RANK', '0'),
                               ('WORLD_SIZE', '1')):
                os.environ.setdefault(key, value)
            import deepspeed
            deepspeed.init_distributed(
                dist_backend='nccl' if torch.cuda.is_available() else 'gloo')
        return super()._wrap_model(model)


