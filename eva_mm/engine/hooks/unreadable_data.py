"""Train through unreadable data files; evaluate only on readable ones."""
import json
import logging
import os.path as osp
import time
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Dict, List, Optional

import torch
from mmengine.dist import (all_gather_object, all_reduce, get_dist_info,
                           is_main_process)
from mmengine.hooks import Hook
from mmengine.logging import print_log

from eva_mm.registry import HOOKS

STATE_KEY = 'unreadable_data'


def _unreadable() -> ModuleType:
    """:mod:`eva_mm.datasets.unreadable`, imported on first use: with it come
    mmdet and mmaction2, which tools importing eva_mm.engine at start-up
    should not wait for."""
    from eva_mm.datasets import unreadable
    return unreadable


@HOOKS.register_module()
class UnreadableDataHook(Hook):
    """Skip unreadable training files with a record; refuse them in evaluation.

    Training: the hook puts the training dataset's pipeline (and that of
    every dataset it wraps) in :class:`eva_mm.datasets.GuardedPipeline`: a
    file that a loading transform cannot read (a missing, truncated or
    corrupt image, label map or video) is skipped, and mmengine's dataset
    draws another index in its place, so every epoch keeps its length
    whatever the sampler (``DefaultSampler``, ``InfiniteSampler``,
    ``eva_mm.RepeatFactorSampler``, on any number of ranks). The skipped
    files reach the main process with the next sample of the same worker;
    there the hook logs each (path and reason) and keeps, across ranks, one
    summary, ``WORK_DIR/<summary>``, rewritten when a file is skipped and at
    the end (and kept in the checkpoints, so a resumed run counts on). Past
    either limit the run stops with one ``UnreadableDataError`` that lists
    the files (:mod:`eva_mm.datasets.unreadable`).

    Evaluation (the validation set before training and at each validation,
    the test set before testing): every file the dataset lists is checked
    once, by its header (missing, empty or not an image/video), and a fault
    stops the run before any inference with an error naming the files; a
    file that fails later to decode stops it with an error naming that file.
    Nothing is left out of a metric.

    Args:
        max_files: Stop when more distinct training files than this were
            unreadable.
        max_fraction: Stop when more than this fraction of the samples drawn
            were unreadable (each skip counts, repeats of a file included),
            once ``min_samples`` were drawn.
        min_samples: Samples drawn before ``max_fraction`` applies.
        check_eval: Check the files of the validation and test sets by
            their headers before evaluating.
        summary: File name of the summary in the work dir.
        check_threads: Threads of the evaluation check (it waits on the
            file system more than it computes).
    """

    def __init__(self,
                 max_files: int = 100,
                 max_fraction: float = 0.01,
                 min_samples: int = 1000,
                 check_eval: bool = True,
                 summary: str = 'skipped_files.json',
                 check_threads: int = 8) -> None:
        if max_files < 0 or not 0 <= max_fraction <= 1 or min_samples < 0:
            raise ValueError(
                'UnreadableDataHook needs max_files >= 0, 0 <= max_fraction '
                f'<= 1 and min_samples >= 0; got {max_files}, {max_fraction} '
                f'and {min_samples}.')
        self.max_files = max_files
        self.max_fraction = max_fraction
        self.min_samples = min_samples
        self.check_eval = check_eval
        self.summary = summary
        self.check_threads = check_threads
        # path -> reason, skips, iteration of the first skip
        self.files: Dict[str, dict] = {}
        self.skips = 0
        self.drawn = 0
        self._resumed_state: Optional[dict] = None
        self._checked: List[object] = []

    # ---------------------------------------------------------------- train
    def before_train(self, runner) -> None:
        """Guard the training pipeline; check the validation files."""
        if self._resumed_state is not None and runner.iter > 0:
            self._load_state(self._resumed_state)
        self._resumed_state = None
        loop = runner.train_loop
        guarded = _unreadable().guard_pipelines(
            loop.dataloader.dataset,
            skip=True,
            max_files=self.max_files,
            advice=self._advice(runner, 'train'))
        if not guarded:
            print_log(
                f'UnreadableDataHook found no pipeline in the training '
                f'dataset {type(loop.dataloader.dataset).__name__}: an '
                'unreadable file will stop the run.',
                logger='current',
                level=logging.WARNING)
        if guarded and loop.dataloader.num_workers > 0 and hasattr(
                loop, 'dataloader_iterator'):
            self._restart_workers(runner, loop)
        if runner.val_loop is not None:
            self._check_eval_set(runner, runner.val_loop, 'val')

    @staticmethod
    def _restart_workers(runner, loop) -> None:
        """Build the loader of an iteration-based loop again.

        Such a loop starts its DataLoader workers when it is built, before
        any hook runs, and they hold the unguarded pipeline. Dropping only
        their iterator would not do: mmengine's ``InfiniteSampler`` keeps
        one generator across iterators, and the dropped iterator closes it.
        So the loader is built again by the runner from the config, with
        the guarded dataset and the same sampler seed (the same data order,
        as without the hook); mmengine copies the dataset on the way.
        """
        loader_cfg = runner.cfg.get('train_dataloader')
        if not isinstance(loader_cfg, dict):
            print_log(
                'UnreadableDataHook cannot rebuild the training DataLoader: '
                "the runner's config has no train_dataloader dict (build "
                'the runner with Runner.from_cfg). Its workers keep the '
                'unguarded pipeline, and an unreadable file will stop the '
                'run.',
                logger='current',
                level=logging.WARNING)
            return
        randomness = runner.cfg.get('randomness') or {}
        loop.dataloader = runner.build_dataloader(
            dict(loader_cfg, dataset=loop.dataloader.dataset),
            seed=runner.seed,
            diff_rank_seed=randomness.get('diff_rank_seed', False))
        loop.dataloader_iterator = type(loop.dataloader_iterator)(
            loop.dataloader)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        """Count this batch on all ranks; log and stop as needed."""
        samples, entries = _unreadable().pop_skipped(data_batch)
        counts = torch.tensor([samples + len(entries), len(entries)],
                              dtype=torch.float64)
        all_reduce(counts)
        self.drawn += int(counts[0])
        if counts[1] > 0:
            gathered = [e for part in all_gather_object(entries) for e in part]
            self._record(gathered, runner.iter + 1)
            self._write_summary(runner)
        self._enforce_limits(runner)

    def after_train(self, runner) -> None:
        """Write the summary (also when nothing was skipped)."""
        self._write_summary(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the counts in the checkpoint."""
        checkpoint[STATE_KEY] = dict(
            files=self.files, skips=self.skips, drawn=self.drawn)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Hold the checkpoint's counts until training starts.

        A resumed run counts on from them; a checkpoint loaded as the start
        of another run (``load_from``) leaves the counts at zero, which
        ``before_train`` tells apart by the iteration it starts at.
        """
        self._resumed_state = checkpoint.get(STATE_KEY)

    def _load_state(self, state: dict) -> None:
        self.files = dict(state['files'])
        self.skips = int(state['skips'])
        self.drawn = int(state['drawn'])

    def _record(self, entries: List[dict], iteration: int) -> None:
        for entry in entries:
            self.skips += 1
            record = self.files.setdefault(
                entry['path'],
                dict(reason=entry['reason'], skips=0,
                     first_iter=iteration))
            record['skips'] += 1
            print_log(
                f'Skipped an unreadable training file at iteration '
                f'{iteration}: {entry["path"]}: {entry["reason"]} (so far '
                f'{len(self.files)} unreadable files, skipped {self.skips} '
                f'times in {self.drawn} samples drawn).',
                logger='current',
                level=logging.WARNING)

    def _enforce_limits(self, runner) -> None:
        too_many = len(self.files) > self.max_files
        too_often = (self.drawn >= self.min_samples
                     and self.skips > self.max_fraction * self.drawn)
        if not (too_many or too_often):
            return
        unreadable = _unreadable()
        self._write_summary(runner)
        limit = (f'more than max_files={self.max_files} distinct files'
                 if too_many else
                 f'{self.skips} of {self.drawn} samples drawn, more than '
                 f'max_fraction={self.max_fraction}')
        entries = [dict(path=path, reason=record['reason'])
                   for path, record in sorted(self.files.items())]
        raise unreadable.UnreadableDataError(
            f'Training stops: {len(self.files)} unreadable training files, '
            f'{limit} (summary: {self._summary_path(runner)}):\n'
            f'{unreadable.format_files(entries, limit=len(entries))}\n'
            f'{self._advice(runner, "train")} Or raise the limits with '
            '--cfg-options default_hooks.unreadable_data.max_files=N '
            'default_hooks.unreadable_data.max_fraction=F.')

    def _summary_path(self, runner) -> str:
        return osp.join(runner.work_dir, self.summary)

    def _write_summary(self, runner) -> None:
        if not is_main_process():
            return
        summary = dict(
            num_files=len(self.files),
            num_skips=self.skips,
            samples_drawn=self.drawn,
            max_files=self.max_files,
            max_fraction=self.max_fraction,
            min_samples=self.min_samples,
            files=[dict(path=path, **record)
                   for path, record in sorted(self.files.items())])
        with open(self._summary_path(runner), 'w') as f:
            json.dump(summary, f, indent=2)

    @staticmethod
    def _advice(runner, split: str) -> str:
        config = getattr(runner.cfg, 'filename', None) or 'CONFIG'
        return (f'List every faulty file with `python tools/analysis/'
                f'check_dataset.py {config} --split {split}`, then repair '
                'the files or take them out of the annotation file.')

    # ----------------------------------------------------------- evaluation
    def before_val(self, runner) -> None:
        """Check and guard the validation set (once)."""
        self._check_eval_set(runner, runner.val_loop, 'val')

    def before_test(self, runner) -> None:
        """Check and guard the test set (once)."""
        self._check_eval_set(runner, runner.test_loop, 'test')

    def _check_eval_set(self, runner, loop, split: str) -> None:
        unreadable = _unreadable()
        dataset = loop.dataloader.dataset
        if any(dataset is checked for checked in self._checked):
            return
        self._checked.append(dataset)
        advice = self._advice(runner, split)
        unreadable.guard_pipelines(dataset, skip=False, advice=advice)
        if not self.check_eval or not hasattr(dataset, 'get_data_info'):
            return
        start = time.perf_counter()
        files = sorted({
            path
            for index in range(len(dataset))
            for path in unreadable.listed_files(dataset.get_data_info(index))
        })
        # Each rank checks its share; all see every fault and stop together.
        rank, world_size = get_dist_info()
        mine = files[rank::world_size]
        with ThreadPoolExecutor(self.check_threads) as pool:
            reasons = list(pool.map(unreadable.check_header, mine))
        faults = [dict(path=path, reason=reason)
                  for path, reason in zip(mine, reasons) if reason]
        faults = sorted((f for part in all_gather_object(faults)
                         for f in part),
                        key=lambda fault: fault['path'])
        if faults:
            raise unreadable.UnreadableDataError(
                f'{len(faults)} of the {len(files)} files of the {split} set '
                'cannot be read; evaluation would stop at the first or, had '
                f'they been left out, report another metric:\n'
                f'{unreadable.format_files(faults)}\n{advice}')
        print_log(
            f'UnreadableDataHook: the {len(files)} files of the {split} set '
            f'have readable headers ({time.perf_counter() - start:.1f} s).',
            logger='current')
