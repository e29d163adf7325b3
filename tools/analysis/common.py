"""What the scripts in tools/analysis share: timing and memory measurement.

The scripts run as ``python tools/analysis/NAME.py``, which puts this folder
on ``sys.path``, so ``from common import ...`` finds this module without
path changes. Peak memory is measured as tools/analysis/benchmark.py's
docstring describes.
"""
import argparse
import ctypes
import gc
import json
import os
import os.path as osp
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Dict, List, Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

# The checkout the scripts belong to; they put it on sys.path so that they
# run without installing eva_mm.
REPO_ROOT = Path(__file__).resolve().parents[2]
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}
# What a memory worker prints before its JSON result.
RESULT_TAG = 'BENCHMARK_MEMORY '


def add_run_arguments(parser: argparse.ArgumentParser,
                      dtypes: Sequence[str], iters: int, warmup: int,
                      threads: Optional[int]) -> None:
    """The options of the paired benchmarks: ``--dtype``, ``--iters``,
    ``--warmup``, ``--device``, ``--threads`` and the hidden
    ``--memory-worker`` of :func:`spawn_memory_worker`.

    Args:
        parser: The script's parser.
        dtypes: Default ``--dtype`` list.
        iters: Default timed iterations.
        warmup: Default untimed iterations.
        threads: Default torch CPU threads (``None``: torch's choice).
    """
    parser.add_argument(
        '--dtype', nargs='+', default=list(dtypes), choices=list(DTYPES),
        help='bf16 runs fp32 weights under torch.autocast')
    parser.add_argument('--iters', type=int, default=iters,
                        help='timed iterations per model and case')
    parser.add_argument('--warmup', type=int, default=warmup,
                        help='untimed iterations per model before timing')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu',
        choices=['cpu', 'cuda'])
    parser.add_argument(
        '--threads', type=int, default=threads,
        help='torch CPU threads; 1 gives steadier numbers on a machine '
        'shared with other jobs')
    parser.add_argument('--memory-worker', help=argparse.SUPPRESS)


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); nothing to wait for on CPU.

    Args:
        device: The device the timed code runs on.
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed_runs(step: Callable[[], object], iters: int, warmup: int,
               device: torch.device) -> List[float]:
    """Seconds of each of ``iters`` calls of ``step`` after ``warmup``
    untimed ones, CUDA work included.

    Args:
        step: What to time.
        iters: Timed calls.
        warmup: Untimed calls first (lazy initialisation, caches).
        device: Where ``step`` runs, to wait for before and after.

    Returns:
        The seconds of each timed call.
    """
    times: List[float] = []
    for i in range(warmup + iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def time_steps(steps: Dict[str, Callable[[], None]], warmup: int,
               iters: int, device: torch.device) -> Dict[str, List[float]]:
    """Seconds per iteration of each step, run in alternating (ABBA) order
    so that iteration ``i`` of every step falls in the same time slot.

    Args:
        steps: What to time, by name.
        warmup: Untimed calls of each step first.
        iters: Timed calls of each step.
        device: Where the steps run, to wait for before and after.

    Returns:
        The seconds of each timed call, by name.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    names = list(steps)
    for i in range(iters):
        for name in names if i % 2 == 0 else names[::-1]:
            synchronize(device)
            start = time.perf_counter()
            steps[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def autocast_for(device: torch.device,
                 dtype: str) -> Callable[[], ContextManager]:
    """A factory of the autocast context of ``dtype`` (a key of
    :data:`DTYPES`; ``'fp32'`` runs without autocast)."""
    if dtype == 'fp32':
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=DTYPES[dtype])


def mib(num_bytes: Optional[float]) -> str:
    """Bytes as whole MiB for a report; ``'n/a'`` for ``None``."""
    return 'n/a' if num_bytes is None else f'{num_bytes / 2**20:.0f}'


def device_description(device: str) -> str:
    """The GPU's name, or the CPU model, core and torch thread counts."""
    if device == 'cuda':
        return torch.cuda.get_device_name()
    cpu = 'unknown CPU'
    if osp.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f
                        if line.startswith('model name')), cpu)
    return (f'CPU ({cpu}, {os.cpu_count()} logical cores), '
            f'{torch.get_num_threads()} torch thread(s)')


def spawn_memory_worker(script: str,
                        spec: dict) -> Dict[str, Optional[float]]:
    """Run ``script --memory-worker SPEC`` in a fresh process and return
    the peak memory it prints after :data:`RESULT_TAG`.

    Raises:
        RuntimeError: With the worker's error output if it printed none.
    """
    proc = subprocess.run(
        [sys.executable, osp.abspath(script), '--memory-worker',
         json.dumps(spec)],
        capture_output=True,
        text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f'Memory case {spec} failed:\n{proc.stderr[-4000:]}')


def release_memory(device: torch.device) -> None:
    """Free what this process no longer references before a memory worker
    runs beside it: cycles first, then the CUDA allocator's cache."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def serve_memory_worker(spec: str,
                        worker: Callable[[dict], Dict[str, Optional[float]]]
                        ) -> None:
    """The worker side of :func:`spawn_memory_worker`: run ``worker`` on the
    JSON ``spec`` and print its result after :data:`RESULT_TAG`."""
    print(RESULT_TAG + json.dumps(worker(json.loads(spec))), flush=True)


def write_report(text: str, path: Optional[str], mode: str = 'w') -> None:
    """Print a markdown report and write it to ``path`` if given.

    Args:
        text: The report.
        path: The file, or ``None``.
        mode: ``'w'`` replaces the file, ``'a'`` appends to it.
    """
    print(text)
    if path:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        with open(path, mode) as f:
            f.write(text)


def _proc_status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_rss_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if impossible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: freed pages may then hide some of the peak


def _profiled_tensor_peak(step: Callable[[], None]) -> float:
    """Peak of the CPU allocator's live bytes during ``step``, relative to
    its start, from the profiler's time-ordered allocation events."""
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        step()
    events = sorted((event for event in prof.profiler.kineto_results.events()
                     if event.name() == '[memory]'),
                    key=lambda event: event.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()  # negative for a free
        peak = max(peak, live)
    return float(peak)


def _rss_growth(step: Callable[[], None]) -> Optional[float]:
    gc.collect()
    _release_free_heap()
    before = _proc_status_kib('VmRSS')
    if not _reset_rss_peak():
        return None
    step()
    return (_proc_status_kib('VmHWM') - before) * 1024.


def peak_memory(step: Callable[[], None],
                device: torch.device) -> Dict[str, Optional[float]]:
    """Bytes by which one warm ``step`` raises memory above its start:
    ``tensor`` (allocator level) and ``rss`` (whole process, CPU only)."""
    step()  # warm-up: lazy initialisation, library pages, kernel caches
    gc.collect()
    if device.type == 'cuda':
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return dict(
            tensor=float(torch.cuda.max_memory_allocated(device) - before),
            rss=None)
    return dict(tensor=_profiled_tensor_peak(step), rss=_rss_growth(step))
