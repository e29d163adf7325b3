"""Throughput and peak memory of EVAViT against timm's Eva, same weights.

Both models are built for the same arch and resolution and EVAViT loads
timm's weights; the script first checks that both ``forward_features`` give
the same numbers, so the comparison is of two implementations of one model.
The EVA-02 presets (``eva02-*``) are compared with timm's own
``eva02_*_patch14_224`` definitions (fused or separate q/k/v as timm builds
them), whose weights EVAViT loads through ``--src-format timm-eva02``'s
conversion.

Example:
    python tools/analysis/benchmark.py --arch tiny base --img-size 224 \
        --batch-size 16 4 --dtype fp32 bf16 --out docs/benchmark.md

Throughput: both models live in this process and their iterations alternate
(timm, EVAViT, EVAViT, timm, ...), so a slow spell on a machine shared with
other jobs hits both alike; images/s is ``batch_size`` over the median
iteration time of ``--iters`` timed iterations after ``--warmup`` untimed
ones, and the speed ratio is the median of timm's over EVAViT's time across
back-to-back iteration pairs.

Peak memory: each case (arch, dtype, pass, implementation) runs in a fresh
subprocess that builds the model, loads the weights and runs one warm-up
iteration; the numbers are how far one more iteration raises memory above
what the process holds before it.

- Tensor peak. CUDA: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``. CPU: the running sum of the allocations and
  frees that ``torch.profiler`` (``profile_memory=True``) records from
  PyTorch's CPU allocator, in time order; exact and deterministic, but blind
  to memory that bypasses that allocator.
- RSS growth (CPU, Linux): the resident-set high-water mark (``VmHWM``),
  reset through ``/proc/self/clear_refs`` right before the iteration, minus
  the resident set then; freed heap is first returned to the OS with glibc's
  ``malloc_trim`` so that reused pages do not hide allocations. It counts
  every page the process touches, allocator slack included, and varies by a
  few percent from run to run. (``tracemalloc`` would see neither:
  PyTorch does not allocate tensors through Python's allocator.)
"""
import argparse
import os.path as osp
import shlex
import statistics
import sys
import tempfile
from typing import Callable, ContextManager, Dict, List, Optional

import timm
import torch
import torch.nn as nn
from timm.layers import use_fused_attn
from timm.models.eva import Eva

from common import (REPO_ROOT, add_run_arguments, autocast_for,
                    device_description, mib, peak_memory,
                    serve_memory_worker, spawn_memory_worker, time_steps,
                    write_report)

sys.path.insert(0, str(REPO_ROOT))
from eva_mm.models import EVAViT  # noqa: E402
from eva_mm.checkpoints.converters.eva02_backbone import (  # noqa: E402
    convert_eva02_keys)

IMPLS = ('timm', 'eva_mm')
PASSES = ('fwd', 'fwd+bwd')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Benchmark EVAViT against timm Eva (same weights).')
    parser.add_argument(
        '--arch', nargs='+', default=['base'],
        choices=sorted(EVAViT.arch_zoo), help='EVAViT presets to compare')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument(
        '--batch-size', type=int, nargs='+', default=[8],
        help='one batch size for all archs, or one per arch')
    add_run_arguments(parser, ['fp32', 'bf16'], iters=10, warmup=2,
                      threads=None)
    parser.add_argument('--out', help='write a markdown report here')
    args = parser.parse_args()
    if len(args.batch_size) not in (1, len(args.arch)):
        parser.error('give one --batch-size, or one per --arch')
    if args.iters < 1:
        parser.error('--iters must be at least 1')
    return args


# ----------------------------------------------------------------------
# Models and one iteration
# ----------------------------------------------------------------------
def build_timm(arch: str, img_size: int) -> Eva:
    """timm's Eva configured as the EVA ViT of ``arch``.

    EVA-02 presets are timm's registered ``eva02_*_patch14_224`` models at
    ``img_size``, with the cls-token pooling (final norm) EVAViT runs here.
    """
    if arch.startswith('eva02-'):
        return timm.create_model(
            f'eva02_{arch[len("eva02-"):]}_patch14_224',
            pretrained=False,
            img_size=img_size,
            num_classes=0,
            global_pool='token')
    cfg = EVAViT.arch_zoo[arch]
    model = Eva(
        img_size=img_size,
        patch_size=cfg['patch_size'],
        embed_dim=cfg['embed_dims'],
        depth=cfg['num_layers'],
        num_heads=cfg['num_heads'],
        mlp_ratio=cfg['mlp_hidden_dim'] / cfg['embed_dims'],
        num_classes=0,
        global_pool='token')
    hidden = model.blocks[0].mlp.fc1.out_features
    if hidden != cfg['mlp_hidden_dim']:
        raise RuntimeError(f'timm rounded the MLP width of {arch} to '
                           f'{hidden}, not {cfg["mlp_hidden_dim"]}.')
    return model


def load_weights(impl: str, arch: str, model: nn.Module, path: str) -> None:
    """Load the shared timm weights (converted for an EVA-02 EVAViT)."""
    weights = torch.load(path, weights_only=True)
    if impl == 'eva_mm' and arch.startswith('eva02-'):
        weights, _ = convert_eva02_keys(weights)
    model.load_state_dict(weights)


def build(impl: str, arch: str, img_size: int) -> nn.Module:
    """The ``impl`` model of ``arch``; both give tokens after the last norm
    from ``forward_features``."""
    if impl == 'timm':
        return build_timm(arch, img_size)
    return EVAViT(arch=arch, img_size=img_size, out_type='raw')


def make_step(model: nn.Module, x: torch.Tensor, backward: bool,
              autocast: Callable[[], ContextManager]) -> Callable[[], None]:
    """One iteration: inference-mode forward, or train-mode forward and
    backward of the mean token."""
    model.train(backward)
    if not backward:

        def forward() -> None:
            with torch.inference_mode(), autocast():
                model.forward_features(x)

        return forward

    def forward_backward() -> None:
        with autocast():
            out = model.forward_features(x)
        out.float().mean().backward()
        # Every iteration allocates the grads anew, as the first one does.
        model.zero_grad(set_to_none=True)

    return forward_backward


# ----------------------------------------------------------------------
# Peak memory, one fresh process per case
# ----------------------------------------------------------------------
def memory_worker(spec: dict) -> Dict[str, Optional[float]]:
    if spec['threads']:
        torch.set_num_threads(spec['threads'])
    device = torch.device(spec['device'])
    model = build(spec['impl'], spec['arch'], spec['img_size'])
    load_weights(spec['impl'], spec['arch'], model, spec['weights'])
    model.to(device)
    x = torch.randn(spec['batch_size'], 3, spec['img_size'],
                    spec['img_size'], device=device)
    step = make_step(model, x, spec['pass'] == 'fwd+bwd',
                     autocast_for(device, spec['dtype']))
    return peak_memory(step, device)


# ----------------------------------------------------------------------
# Driver and report
# ----------------------------------------------------------------------
def benchmark_arch(args: argparse.Namespace, arch: str, batch_size: int,
                   weights: str) -> List[dict]:
    """All rows of one arch; also checks both models compute the same."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    models = {impl: build(impl, arch, args.img_size) for impl in IMPLS}
    for impl, model in models.items():
        load_weights(impl, arch, model, weights)
        model.to(device).eval()
    probe = torch.randn(2, 3, args.img_size, args.img_size, device=device)
    with torch.inference_mode():
        timm_out, eva_out = (m.forward_features(probe)
                             for m in models.values())
    parity = (timm_out - eva_out).abs().max().item()
    if parity > 1e-3:
        raise RuntimeError(f'EVAViT and timm Eva differ by {parity} on '
                           f'{arch}; the comparison would be meaningless.')

    x = torch.randn(batch_size, 3, args.img_size, args.img_size,
                    device=device)
    rows = []
    for dtype in args.dtype:
        for pass_ in PASSES:
            steps = {
                impl: make_step(model, x, pass_ == 'fwd+bwd',
                                autocast_for(device, dtype))
                for impl, model in models.items()
            }
            times = time_steps(steps, args.warmup, args.iters, device)
            throughput = {
                impl: batch_size / statistics.median(values)
                for impl, values in times.items()
            }
            # Ratios of back-to-back iterations cancel the slow drifts of a
            # shared machine's load better than a ratio of two medians.
            speed_ratio = statistics.median(
                t / e for t, e in zip(times['timm'], times['eva_mm']))
            peak = {
                impl: spawn_memory_worker(__file__, {
                    'impl': impl, 'arch': arch, 'dtype': dtype,
                    'pass': pass_, 'img_size': args.img_size,
                    'batch_size': batch_size, 'device': args.device,
                    'threads': args.threads, 'weights': weights
                })
                for impl in IMPLS
            }
            row = dict(arch=arch, batch_size=batch_size, dtype=dtype,
                       pass_=pass_, throughput=throughput,
                       speed_ratio=speed_ratio, peak=peak, parity=parity)
            print(f'{arch} {dtype} {pass_}: ' + ', '.join(
                f'{impl} {throughput[impl]:.2f} img/s, tensor peak '
                f'{mib(peak[impl]["tensor"])} MiB, RSS growth '
                f'{mib(peak[impl]["rss"])} MiB' for impl in IMPLS),
                  flush=True)
            rows.append(row)
    return rows


def report(args: argparse.Namespace, rows: List[dict]) -> str:
    if args.device == 'cuda':
        memory = ('tensor peak = growth of `torch.cuda.max_memory_allocated` '
                  'during one warm iteration')
    else:
        memory = ('tensor peak = highest running sum of the CPU allocator\'s '
                  'allocations minus frees during one warm iteration, from '
                  '`torch.profiler(profile_memory=True)`; RSS growth = rise '
                  'of the process peak RSS (VmHWM, reset through '
                  '/proc/self/clear_refs after `malloc_trim`) above the RSS '
                  'before one warm iteration, which also counts allocator '
                  'slack and varies by a few percent between runs. Each case '
                  'runs in a fresh subprocess')
    command = ' '.join(['python', 'tools/analysis/benchmark.py'] +
                       [shlex.quote(arg) for arg in sys.argv[1:]])
    parity = {row['arch']: row['parity'] for row in rows}
    lines = [
        f'Command: `{command}`',
        '',
        f'- Device: {device_description(args.device)}; torch '
        f'{torch.__version__}, timm {timm.__version__} (fused attention: '
        f'{use_fused_attn()}).',
        f'- Throughput: images/s = batch / median of {args.iters} timed '
        f'iterations per model after {args.warmup} warm-up ones, the two '
        'models alternating; speed ratio = median over back-to-back '
        'iteration pairs of timm time / EVAViT time (> 1: EVAViT faster). '
        '`fwd`: inference mode; `fwd+bwd`: train mode, backward of the mean '
        'of `forward_features`; bf16: fp32 weights under `torch.autocast`.',
        f'- Peak memory: {memory}.',
        '- Same computation: EVAViT runs the timm model\'s weights; max abs '
        'difference of `forward_features` at fp32: ' + ', '.join(
            f'{arch} {diff:.1e}' for arch, diff in parity.items()) + '.',
        '',
        '| arch | img | batch | dtype | pass | timm img/s | EVAViT img/s '
        '| speed ratio | timm tensor peak MiB | EVAViT tensor peak MiB '
        '| timm RSS growth MiB | EVAViT RSS growth MiB |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for row in rows:
        speed, peak = row['throughput'], row['peak']
        lines.append(
            f'| {row["arch"]} | {args.img_size} | {row["batch_size"]} '
            f'| {row["dtype"]} | {row["pass_"]} | {speed["timm"]:.2f} '
            f'| {speed["eva_mm"]:.2f} '
            f'| {row["speed_ratio"]:.2f} '
            f'| {mib(peak["timm"]["tensor"])} '
            f'| {mib(peak["eva_mm"]["tensor"])} '
            f'| {mib(peak["timm"]["rss"])} | {mib(peak["eva_mm"]["rss"])} |')
    return '\n'.join(lines) + '\n'


def main() -> None:
    args = parse_args()
    if args.memory_worker:
        serve_memory_worker(args.memory_worker, memory_worker)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = (args.batch_size * len(args.arch)
                   if len(args.batch_size) == 1 else args.batch_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, batch_size in zip(args.arch, batch_sizes):
            # One set of timm weights per arch, shared with every process.
            torch.manual_seed(0)
            weights = osp.join(tmp, f'{arch}.pth')
            torch.save(build_timm(arch, args.img_size).state_dict(), weights)
            rows += benchmark_arch(args, arch, batch_size, weights)
    write_report(report(args, rows), args.out)


if __name__ == '__main__':
    main()
