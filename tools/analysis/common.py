"""What the scripts in tools/analysis share: timing and memory measurement.

The scripts run as ``python tools/analysis/NAME.py``, which puts this folder
on ``sys.path``, so ``from common import ...`` finds this module without
path changes. Peak memory is measured as tools/analysis/benchmark.py's
docstring describes.
"""
import ctypes
import gc
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch.profiler import ProfilerActivity, profile

# The checkout the scripts belong to; they put it on sys.path so that they
# run without installing eva_mm.
REPO_ROOT = Path(__file__).resolve().parents[2]


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
