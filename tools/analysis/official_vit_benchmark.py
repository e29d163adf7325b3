"""Step time and peak memory of EVAViT against the official EVA-01 code,
same weights, same input, one forward + backward step.

The official backbones are imported from a checkout of baaivision/EVA
(``--official-repo DIR``) with small stand-ins for the libraries they import
(``official_eva.py`` says which and why); no official code is part of
eva_mm. Pairs (``--case PAIR:IMG``, ``official_eva.PAIRS``):

- ``det-b``, ``det-l``: the official EVA-01 detection ViT
  (EVA-01/det/detectron2/modeling/backbone/vit.py) against ``EVAViT`` in the
  ViTDet geometry: ViT-B (768 wide, 12 blocks, 12 heads) or ViT-L (1024,
  24, 16), patch 16, windows of 14 with global blocks 2/5/8/11 (B) or
  5/11/17/23 (L), decomposed relative positions, no cls token in the
  sequence, the 224 px position embedding with its cls position resized to
  the grid, q/v biases, ``LayerNorm(eps=1e-6)``; ``det-g`` is EVA-01's
  ViT-g detector (``tools/gpu_check.py`` measures it on a GPU);
- ``adapter-b``: the official ViT-Adapter (EVA-01/seg/mmseg_custom/models/
  backbones/beit_adapter.py, its deformable attention on the official
  PyTorch reference) against ``EVAViTAdapter``, ViT-B, global attention
  with the cls token; the official adapter needs inputs of the size it is
  built for.

timm's ``Eva`` is left out: it has neither window attention nor ViTDet's
decomposed relative positions, so in these geometries it would compute
another function. ``benchmark.py`` compares EVAViT with timm's Eva in the
geometry they share (plain global attention with the cls token).

Example:
    python tools/analysis/official_vit_benchmark.py \
        --official-repo ~/EVA --case det-b:512 det-b:1024 det-l:1024 \
        --dtype fp32 bf16 --out docs/benchmark.md

Method, as ``benchmark.py``'s:

- Same computation: the official model is built with its initialisation,
  every parameter is perturbed, and EVAViT loads the result through the
  project's converter; both then run the timed input in eval mode at fp32
  and the max abs difference of their feature maps is reported (over 1e-3
  stops the script: the comparison would be meaningless).
- Step: train mode, forward, backward of the sum of each output map's mean
  (the detection ViT's one map, the adapter's four), grads set to None.
  bf16: fp32 weights under ``torch.autocast``.
- Time: both models in this process, alternating step by step (official,
  EVAViT, EVAViT, official, ...) after ``--warmup`` untimed steps each;
  s/step is the median of ``--iters`` steps, the speed ratio the median of
  the back-to-back ratios official / EVAViT (> 1: EVAViT faster). The first
  warm-up step is reported on its own: with ``--compile`` it compiles.
- Peak memory: each model in a fresh subprocess, which builds it, loads the
  weights and runs one warm-up step; the memory one more step adds
  (``common.peak_memory``): on CPU the allocator-level tensor peak from
  ``torch.profiler`` and the RSS growth, on CUDA
  ``torch.cuda.max_memory_allocated``. Memory ratio = EVAViT / official.
- ``--with-cp {none,all,global,attn}`` gives EVAViT ``with_cp=False, True,
  'global', 'attn'``; the official code checkpoints every block or none
  (``use_act_checkpoint``; ``with_cp`` in the adapter), so it runs ``all``
  for any mode but ``none``. ``--compile`` gives EVAViT ``compile=True``
  and wraps the official model in ``torch.compile``. Neither option is
  passed unless given.
"""
import argparse
import inspect
import os.path as osp
import shlex
import statistics
import sys
import tempfile
from typing import Callable, ContextManager, Dict, List, Optional, Tuple

import timm
import torch
import torch.nn as nn

from common import (add_run_arguments, autocast_for, device_description,
                    mib, peak_memory, release_memory, serve_memory_worker,
                    spawn_memory_worker, time_steps, timed_runs,
                    write_report)
from official_eva import (PAIRS, EVAViT, Pair, eva_mm_with_cp,
                          official_with_cp, output_maps, randomize,
                          same_outputs)

IMPLS = ('official', 'eva_mm')
CP_MODES = ('none', 'all', 'global', 'attn')
# Above this the two models do not compute the same function.
MAX_DIFF = 1e-3


def parse_case(text: str) -> Tuple[str, int]:
    """``PAIR:IMG`` -> (pair name, image side); the argparse type."""
    name, _, img = text.partition(':')
    if name not in PAIRS or not img.isdigit():
        raise argparse.ArgumentTypeError(
            f'{text!r} is not PAIR:IMG with PAIR one of {sorted(PAIRS)} and '
            'IMG the image side in pixels, e.g. det-b:512.')
    return name, int(img)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Benchmark EVAViT against the official EVA-01 code '
        '(same weights).')
    parser.add_argument(
        '--official-repo', metavar='DIR',
        help='a checkout of https://github.com/baaivision/EVA (the folder '
        'holding EVA-01/); required')
    parser.add_argument(
        '--case', nargs='+', type=parse_case, default=[('det-b', 512)],
        metavar='PAIR:IMG', help=f'model pair ({", ".join(PAIRS)}) and '
        'square image side, e.g. det-b:512 det-b:1024 det-l:1024')
    parser.add_argument('--batch-size', type=int, default=1)
    add_run_arguments(parser, ['fp32'], iters=5, warmup=1, threads=1)
    parser.add_argument(
        '--with-cp', choices=CP_MODES,
        help="EVAViT's activation checkpointing: none, all blocks, the "
        'global blocks, attention only (the official code: all or none)')
    parser.add_argument(
        '--compile', action='store_true',
        help='EVAViT(compile=True), and the official model in torch.compile')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='append the markdown report here')
    args = parser.parse_args(argv)
    if args.memory_worker:
        return args
    if not args.official_repo:
        parser.error('--official-repo DIR is required: a checkout of '
                     'https://github.com/baaivision/EVA.')
    if args.iters < 1 or args.warmup < 1:
        parser.error('--iters and --warmup must be at least 1 (the first '
                     'warm-up step compiles with --compile).')
    for name, img in args.case:
        error = PAIRS[name].size_error(img)
        if error:
            parser.error(f'--case {name}:{img}: {error}.')
    return args


def eva_mm_options(args: argparse.Namespace) -> Dict[str, object]:
    """The EVAViT arguments of ``--with-cp`` and ``--compile``, only those
    given, checked against this checkout's EVAViT.

    Raises:
        SystemExit: If this EVAViT has no such option (a per-part mode on a
            boolean ``with_cp`` would silently checkpoint every block).
    """
    params = inspect.signature(EVAViT.__init__).parameters
    options: Dict[str, object] = {}
    if args.with_cp is not None:
        if (args.with_cp in ('global', 'attn')
                and params['with_cp'].annotation is bool):
            raise SystemExit(
                f'--with-cp {args.with_cp}: this checkout\'s EVAViT takes '
                'with_cp as a bool only; use none or all.')
        options['with_cp'] = eva_mm_with_cp(args.with_cp)
    if args.compile:
        if 'compile' not in params:
            raise SystemExit('--compile: this checkout\'s EVAViT has no '
                             'compile option.')
        options['compile'] = True
    return options


# ----------------------------------------------------------------------
# Models and one step
# ----------------------------------------------------------------------
def build(impl: str, pair: Pair, img: int, spec: dict) -> nn.Module:
    """The ``impl`` model of ``pair`` with the official weights at
    ``spec['weights']``, compiled if ``spec['compile']``."""
    weights = torch.load(spec['weights'], weights_only=True)
    if impl == 'official':
        module = pair.load_official(spec['official_repo'])
        model = pair.build_official(module, img,
                                    official_with_cp(spec['cp']))
        model.load_state_dict(weights)
        return torch.compile(model) if spec['compile'] else model
    model = pair.build_eva_mm(img, spec['eva_mm_options'])
    model.load_state_dict(pair.eva_mm_weights(weights, img))
    return model


def make_step(model: nn.Module, x: torch.Tensor,
              autocast: Callable[[], ContextManager]) -> Callable[[], None]:
    """One train-mode forward and backward of the sum of the map means."""
    model.train()

    def step() -> None:
        with autocast():
            maps = output_maps(model(x))
        sum(m.float().mean() for m in maps).backward()
        # Every step allocates the grads anew, as the first one does.
        model.zero_grad(set_to_none=True)

    return step


def _input(spec: dict, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(spec['seed'])
    img = spec['img']
    return torch.randn(spec['batch_size'], 3, img, img,
                       generator=generator).to(device)


def memory_worker(spec: dict) -> Dict[str, Optional[float]]:
    torch.set_num_threads(spec['threads'])
    device = torch.device(spec['device'])
    model = build(spec['impl'], PAIRS[spec['pair']], spec['img'], spec)
    model.to(device)
    step = make_step(model, _input(spec, device),
                     autocast_for(device, spec['dtype']))
    return peak_memory(step, device)


# ----------------------------------------------------------------------
# Driver and report
# ----------------------------------------------------------------------
def benchmark_case(args: argparse.Namespace, name: str, img: int,
                   weights: str) -> List[dict]:
    """The rows of one pair and image size, one per dtype."""
    device = torch.device(args.device)
    pair = PAIRS[name]
    cp = args.with_cp or 'none'
    spec = dict(pair=name, img=img, batch_size=args.batch_size,
                cp=cp, compile=args.compile, seed=args.seed,
                official_repo=args.official_repo, weights=weights,
                eva_mm_options=eva_mm_options(args), device=args.device,
                threads=args.threads)
    # The official model with its own initialisation, then perturbed; its
    # weights are what every model of this case runs.
    torch.manual_seed(args.seed)
    official = pair.build_official(pair.load_official(args.official_repo),
                                   img, official_with_cp(cp))
    randomize(official, args.seed)
    torch.save(official.state_dict(), weights)
    del official
    models = {impl: build(impl, pair, img, spec).to(device) for impl in IMPLS}
    x = _input(spec, device)
    for model in models.values():
        model.eval()
    with torch.no_grad():
        official_maps, eva_maps = (output_maps(m(x))
                                   for m in models.values())
    parity = same_outputs(official_maps, eva_maps)
    del official_maps, eva_maps
    if parity > MAX_DIFF:
        raise RuntimeError(
            f'The official model and EVAViT differ by {parity:.2e} on '
            f'{name} at {img} px; the comparison would be meaningless.')
    print(f'{name} {img} px: max abs difference of the outputs (fp32) '
          f'{parity:.1e}', flush=True)

    rows = []
    for dtype in args.dtype:
        steps = {
            impl: make_step(model, x, autocast_for(device, dtype))
            for impl, model in models.items()
        }
        first = {
            impl: timed_runs(step, 1, 0, device)[0]
            for impl, step in steps.items()
        }
        times = time_steps(steps, args.warmup - 1, args.iters, device)
        rows.append(dict(
            pair=name, img=img, dtype=dtype, cp=cp, compile=args.compile,
            parity=parity, first_step=first,
            seconds={impl: statistics.median(t)
                     for impl, t in times.items()},
            # Ratios of back-to-back steps cancel the slow drifts of a
            # shared machine's load better than a ratio of two medians.
            speed_ratio=statistics.median(
                o / e for o, e in zip(times['official'], times['eva_mm']))))
        print(f'{name} {img} px {dtype} step seconds: ' + '; '.join(
            f'{impl} ' + ' '.join(f'{t:.2f}' for t in times[impl])
            for impl in IMPLS), flush=True)
    # Free this process's models before the memory workers run: one big
    # process at a time.
    del models, steps
    release_memory(device)
    for row in rows:
        row['peak'] = {
            impl: spawn_memory_worker(__file__, dict(spec, impl=impl,
                                                     dtype=row['dtype']))
            for impl in IMPLS
        }
        print(format_row(row), flush=True)
    return rows


def _ratio(numerator: Optional[float],
           denominator: Optional[float]) -> str:
    if numerator is None or not denominator:
        return 'n/a'
    return f'{numerator / denominator:.2f}'


def cp_cell(cp: str) -> str:
    """The checkpointing of both models, as the table shows it."""
    official = 'all' if official_with_cp(cp) else 'none'
    return cp if cp == official else f'{cp} (official: {official})'


TABLE_HEADER = [
    '| model pair | img | dtype | cp | compile | official s/step '
    '| EVAViT s/step | speed ratio | official added peak MiB '
    '| EVAViT added peak MiB | memory ratio '
    '| RSS growth MiB (official / EVAViT) '
    '| first step s (official / EVAViT) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
]


def format_row(row: dict) -> str:
    """One table row: times, the paired speed ratio (official / EVAViT),
    tensor peaks and their ratio (EVAViT / official), RSS growth, and the
    first (compiling) steps."""
    seconds, peak, first = row['seconds'], row['peak'], row['first_step']
    official, eva = peak['official'], peak['eva_mm']
    return (
        f'| {row["pair"]} | {row["img"]} | {row["dtype"]} '
        f'| {cp_cell(row["cp"])} | {"yes" if row["compile"] else "no"} '
        f'| {seconds["official"]:.2f} | {seconds["eva_mm"]:.2f} '
        f'| {row["speed_ratio"]:.2f} '
        f'| {mib(official["tensor"])} | {mib(eva["tensor"])} '
        f'| {_ratio(eva["tensor"], official["tensor"])} '
        f'| {mib(official["rss"])} / {mib(eva["rss"])} '
        f'| {first["official"]:.2f} / {first["eva_mm"]:.2f} |')


def report(args: argparse.Namespace, rows: List[dict]) -> str:
    """The markdown report: command, method, parity line and table."""
    if args.device == 'cuda':
        memory = ('added peak = growth of `torch.cuda.max_memory_allocated` '
                  'during one warm step')
    else:
        memory = ('added peak = highest running sum of the CPU allocator\'s '
                  'allocations minus frees during one warm step, from '
                  '`torch.profiler(profile_memory=True)`; RSS growth = rise '
                  'of the process peak RSS (VmHWM) above the RSS before one '
                  'warm step, allocator slack included')
    command = ' '.join(
        ['python', 'tools/analysis/official_vit_benchmark.py'] +
        [shlex.quote(arg) for arg in sys.argv[1:]])
    parity = ', '.join(
        f'{row["pair"]} {row["img"]} px {row["parity"]:.1e}'
        for row in rows if row['dtype'] == args.dtype[0])
    lines = [
        f'Command: `{command}`',
        '',
        f'- Device: {device_description(args.device)}; torch '
        f'{torch.__version__}, timm {timm.__version__}; batch '
        f'{args.batch_size}.',
        f'- Step: train mode, forward and backward of the mean of each '
        'output map; s/step = median of '
        f'{args.iters} steps per model after {args.warmup} warm-up ones, '
        'the two models alternating; speed ratio = median over '
        'back-to-back pairs of official time / EVAViT time (> 1: EVAViT '
        'faster); first step = the first warm-up step (compilation with '
        '`--compile`).',
        f'- Peak memory: each model in a fresh subprocess; {memory}; memory '
        'ratio = EVAViT / official (< 1: EVAViT leaner).',
        '- Same computation: EVAViT runs the official model\'s weights; max '
        f'abs difference of the feature maps at fp32: {parity}.',
        '',
        *TABLE_HEADER,
        *(format_row(row) for row in rows),
    ]
    return '\n'.join(lines) + '\n'


def main() -> None:
    args = parse_args()
    if args.memory_worker:
        serve_memory_worker(args.memory_worker, memory_worker)
        return
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, img in args.case:
            rows += benchmark_case(args, name, img,
                                   osp.join(tmp, f'{name}-{img}.pth'))
    write_report(report(args, rows), args.out, mode='a')


if __name__ == '__main__':
    main()
