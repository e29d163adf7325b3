"""Time and memory of one attention call with ViTDet's decomposed relative
positions, in each exact formulation, on the same inputs.

The formulations (``--impl``):

- ``official``: the official EVA-01 detector's arithmetic
  (EVA-01/det/detectron2/modeling/backbone/vit.py:122-139 with
  utils.py:121-150): ``(q * scale) @ k^T``, the two relative terms added to
  a (B * heads, N, N) view, softmax, ``@ v``;
- ``dense``: eva_mm before issue #20: the same bias built as a dense
  (B, heads, N, N) ``attn_mask`` of ``F.scaled_dot_product_attention``;
- ``fold``: the bias folded into q and k, one mask-free
  ``F.scaled_dot_product_attention`` call (eva_mm's path on CUDA);
- ``blocked``: eva_mm's blocked kernel (its path on the CPU);
- ``direct``: the official arithmetic on the relative logits eva_mm
  computes (its path for small 16-bit calls on the CPU).

See ``eva_mm/models/layers/rel_pos_attention.py`` for the last three.
``--plain`` measures attention with no relative term instead (RoPE's,
EVA-02's, and the adapter's): ``official`` (EVA-01/seg/mmseg_custom/models/
backbones/base/beit.py:126-143), ``fused`` (``F.scaled_dot_product_attention``)
and ``formula``, the two paths of eva_mm's
``layers/attention.py:scaled_dot_product_attention``. A case
is ``NAME:HxW:B``: B independent sequences of an H x W grid, e.g. the four
global blocks of ViT-B at 1024 px see ``64x64:1`` per image and its window
blocks ``14x14:25`` (the 64 x 64 grid padded to 5 x 5 windows of 14).

Method (as the other scripts here): q, k and v (and the tables) require
gradients; one step is the forward under ``--dtype`` (bf16: the inputs
cast as the qkv projection's output would be under autocast) and the
backward of the output's sum. Time: every formulation in this process,
alternating step by step (ABBA) after ``--warmup`` untimed steps; the
median of ``--iters``. Memory: each formulation in a fresh subprocess, the
peak one warm step adds above its inputs (``common.peak_memory``).
Exactness: every output against ``official`` in fp32.

Example:
    python tools/analysis/rel_pos_attention_benchmark.py \\
        --case global:64x64:1 windows:14x14:25 --dtype fp32 bf16
"""
import argparse
import statistics
import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch

from common import (DTYPES, REPO_ROOT, add_run_arguments, autocast_for,
                    device_description, mib, peak_memory, serve_memory_worker,
                    spawn_memory_worker, time_steps, write_report)

sys.path.insert(0, str(REPO_ROOT))
from eva_mm.models.layers.attention import (  # noqa: E402
    scaled_dot_product_attention)
from eva_mm.models.layers.rel_pos_attention import (  # noqa: E402
    _rel_pos_lookup, decomposed_rel_pos_attention, decomposed_rel_pos_logits)

IMPLS = ('official', 'dense', 'fold', 'blocked', 'direct')
PLAIN_IMPLS = ('official', 'fused', 'formula')
Inputs = Tuple[torch.Tensor, ...]


def parse_case(text: str) -> Tuple[str, Tuple[int, int], int]:
    """``NAME:HxW:B`` -> (name, (H, W), B)."""
    try:
        name, grid, batch = text.split(':')
        h, w = (int(side) for side in grid.split('x'))
        return name, (h, w), int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'a case is NAME:HxW:B, e.g. global:64x64:1, got {text!r}')


def official(q, k, v, table_h, table_w, hw, scale):
    b, heads, n, dim = q.shape
    h, w = hw
    attn = (q * scale) @ k.transpose(-2, -1)
    q_grid = q.reshape(b * heads, h, w, dim)
    rel_h = torch.einsum('bhwc,hkc->bhwk', q_grid, _rel_pos_lookup(table_h, h))
    rel_w = torch.einsum('bhwc,wkc->bhwk', q_grid, _rel_pos_lookup(table_w, w))
    attn = (attn.view(b * heads, h, w, h, w) + rel_h[..., None] +
            rel_w[..., None, :]).view(b, heads, n, n)
    return attn.softmax(dim=-1) @ v


def dense(q, k, v, table_h, table_w, hw, scale):
    b, heads, n, _ = q.shape
    rel_h, rel_w = decomposed_rel_pos_logits(q, table_h, table_w, hw)
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, n, n)
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=bias.to(q.dtype))


def rewritten(impl: str) -> Callable:
    def attend(q, k, v, table_h, table_w, hw, scale):
        rel_h, rel_w = decomposed_rel_pos_logits(q, table_h, table_w, hw)
        return decomposed_rel_pos_attention(q, k, v, rel_h, rel_w, scale,
                                            impl=impl)
    return attend


def plain(formula: Optional[bool]) -> Callable:
    def attend(q, k, v, table_h, table_w, hw, scale):
        if formula is None:  # the official arithmetic (beit.py:126-143)
            return ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return scaled_dot_product_attention(q, k, v, formula=formula)
    return attend


FORMULATIONS = dict(
    official=official, dense=dense, fold=rewritten('fold'),
    blocked=rewritten('blocked'), direct=rewritten('direct'))
PLAIN_FORMULATIONS = dict(official=plain(None), fused=plain(False),
                          formula=plain(True))


def formulations(no_rel_pos: bool) -> Dict[str, Callable]:
    return PLAIN_FORMULATIONS if no_rel_pos else FORMULATIONS


def make_inputs(hw: Tuple[int, int], batch: int, heads: int, head_dim: int,
                device: torch.device) -> Inputs:
    gen = torch.Generator().manual_seed(0)
    n = hw[0] * hw[1]
    tensors = [torch.randn(batch, heads, n, head_dim, generator=gen)
               for _ in range(3)]
    tensors += [torch.randn(2 * side - 1, head_dim, generator=gen) * 0.5
                for side in hw]
    return tuple(t.to(device).requires_grad_() for t in tensors)


def make_step(impl: str, inputs: Inputs, hw: Tuple[int, int], dtype: str,
              device: torch.device,
              no_rel_pos: bool = False) -> Callable[[], None]:
    q, k, v, table_h, table_w = inputs
    attend = formulations(no_rel_pos)[impl]
    scale = q.shape[-1]**-0.5
    autocast = autocast_for(device, dtype)

    def step() -> None:
        with autocast():
            # Under autocast q, k and v come out of the qkv Linear in bf16.
            out = attend(*(t.to(DTYPES[dtype]) for t in (q, k, v)),
                         table_h, table_w, hw, scale)
        out.float().sum().backward()
        for t in inputs:
            t.grad = None

    return step


def memory_worker(spec: dict) -> Dict[str, Optional[float]]:
    torch.set_num_threads(spec['threads'])
    device = torch.device(spec['device'])
    inputs = make_inputs(tuple(spec['hw']), spec['batch'], spec['heads'],
                         spec['head_dim'], device)
    return peak_memory(
        make_step(spec['impl'], inputs, tuple(spec['hw']), spec['dtype'],
                  device, spec['plain']), device)


def max_difference(inputs: Inputs, hw: Tuple[int, int],
                   no_rel_pos: bool = False) -> Dict[str, float]:
    """Max abs difference of each output from ``official``'s, fp32."""
    with torch.no_grad():
        outs = {impl: fn(*inputs[:3], *inputs[3:], hw, inputs[0].shape[-1]**
                         -0.5)
                for impl, fn in formulations(no_rel_pos).items()}
    return {impl: (out - outs['official']).abs().max().item()
            for impl, out in outs.items()}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--case', nargs='+', type=parse_case,
                        default=[parse_case('global:64x64:1'),
                                 parse_case('windows:14x14:25')],
                        help='NAME:HxW:B (default: ViT-B at 1024 px)')
    parser.add_argument('--heads', type=int, default=12)
    parser.add_argument('--head-dim', type=int, default=64)
    parser.add_argument('--impl', nargs='+',
                        choices=sorted(set(IMPLS + PLAIN_IMPLS)),
                        help=f'default: all of {IMPLS}, with --plain all of '
                        f'{PLAIN_IMPLS}')
    parser.add_argument('--plain', action='store_true',
                        help='attention with no relative term')
    parser.add_argument('--out', help='append the markdown report here')
    add_run_arguments(parser, dtypes=('fp32', 'bf16'), iters=5, warmup=1,
                      threads=1)
    args = parser.parse_args(argv)
    if args.memory_worker:
        serve_memory_worker(args.memory_worker, memory_worker)
        return
    known = PLAIN_IMPLS if args.plain else IMPLS
    args.impl = args.impl or list(known)
    if set(args.impl) - set(known):
        parser.error(f'--impl {" ".join(sorted(set(args.impl) - set(known)))}'
                     f': {"with" if args.plain else "without"} --plain the '
                     f'formulations are {", ".join(known)}')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows, exactness = [], []
    for name, hw, batch in args.case:
        inputs = make_inputs(hw, batch, args.heads, args.head_dim, device)
        diffs = max_difference(inputs, hw, args.plain)
        exactness.append(f'{name}: ' + ', '.join(
            f'{impl} {diffs[impl]:.1e}' for impl in args.impl))
        for dtype in args.dtype:
            steps = {impl: make_step(impl, inputs, hw, dtype, device,
                                     args.plain)
                     for impl in args.impl}
            times = time_steps(steps, args.warmup, args.iters, device)
            medians = {impl: statistics.median(t) for impl, t in times.items()}
            for impl in args.impl:
                memory = spawn_memory_worker(__file__, dict(
                    impl=impl, hw=hw, batch=batch, heads=args.heads,
                    head_dim=args.head_dim, dtype=dtype, device=args.device,
                    plain=args.plain, threads=args.threads or torch.get_num_threads()))
                speed = ('n/a' if 'official' not in medians else
                         f'{medians["official"] / medians[impl]:.2f}')
                rows.append(
                    f'| {name} | {hw[0]}x{hw[1]} x {batch} | {dtype} | '
                    f'{impl} | {medians[impl]:.3f} | {speed} | '
                    f'{mib(memory["tensor"])} |')
    report = '\n'.join([
        f'- Device: {device_description(args.device)}; torch '
        f'{torch.__version__}; {args.heads} heads of {args.head_dim}; '
        + ('no relative term.' if args.plain else
           'decomposed relative positions.'),
        f'- Time: median of {args.iters} steps after {args.warmup} warm-up '
        'ones, the formulations alternating; speed = official s / this s.',
        '- Max abs difference from `official` at fp32: ' +
        '; '.join(exactness) + '.', '',
        '| case | grid x sequences | dtype | formulation | s/step | speed '
        'vs official | added tensor peak MiB |',
        '|---|---|---|---|---|---|---|', *rows, ''])
    write_report(report, args.out, mode='a')


if __name__ == '__main__':
    main()
