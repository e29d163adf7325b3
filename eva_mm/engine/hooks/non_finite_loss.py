"""Stop, or step back, when the training loss stops being a number."""
import math
import os.path as osp
from typing import Optional

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.logging import print_log

from eva_mm.registry import HOOKS

from ..safe_checkpoint import register_mmengine_safe_globals


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Check every iteration's loss on every rank.

    By default a NaN or infinite loss stops training with an error that names
    the iteration and the last checkpoint saved before it. With
    ``reload=True`` the hook instead reloads that checkpoint (weights,
    optimizer, schedule, iteration counter) and training goes on with the
    next batches of data, as the official EVA code does; the failed step
    counts as the iteration after the checkpoint's, so the run still ends at
    ``max_iters`` with one update fewer. After ``max_reloads`` reloads it
    stops anyway.

    It runs before the CheckpointHook, so a checkpoint is never written after
    a non-finite loss; ranks agree through an all-reduce so that all stop or
    reload together.

    Args:
        reload: Reload the last checkpoint instead of stopping.
        max_reloads: Reloads allowed before giving up.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, reload: bool = False, max_reloads: int = 3) -> None:
        self.reload = reload
        self.max_reloads = max_reloads
        self.reloads = 0

    @staticmethod
    def _last_checkpoint(runner) -> Optional[str]:
        marker = osp.join(runner.work_dir, 'last_checkpoint')
        if not osp.isfile(marker):
            return None
        with open(marker) as f:
            return f.read().strip() or None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        loss = outputs.get('loss') if outputs else None
        if loss is None:
            return
        loss = float(torch.as_tensor(loss).detach())
        bad = torch.tensor(0. if math.isfinite(loss) else 1.)
        all_reduce(bad)
        if not bad.item():
            return
        iteration = runner.iter + 1
        checkpoint = self._last_checkpoint(runner)
        where = checkpoint or 'none saved yet'
        if self.reload and checkpoint and self.reloads < self.max_reloads:
            self.reloads += 1
            print_log(
                f'Non-finite loss {loss} at iteration {iteration}: '
                f'reloading {checkpoint} (reload {self.reloads} of '
                f'{self.max_reloads}).',
                logger='current',
                level=30)
            # The file is one mmengine wrote (message hub and all).
            register_mmengine_safe_globals()
            runner.resume(checkpoint)
            return
        raise NonFiniteLossError(
            f'Non-finite loss {loss} at iteration {iteration}. The '
            f'last good checkpoint is {where}. Resume from it with '
            '`tools/train.py CONFIG --resume` (perhaps with a lower lr or '
            'bf16 instead of fp16), or set '
            "custom_hooks=[dict(type='eva_mm.NonFiniteLossHook', "
            'reload=True)] to reload it automatically.')
