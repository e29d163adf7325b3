"""Exact attention with ViTDet's decomposed relative positions, with no
N x N bias tensor.

ViTDet's term (EVA-01/det/detectron2/modeling/backbone/utils.py:121-150,
``add_decomposed_rel_pos``) adds to the logit of query i and key j

    q_i . R_h[h_i - h_j] + q_i . R_w[w_i - w_j] = rel_h[i, h_j] + rel_w[i, w_j],

which depends on the key only through its row h_j and column w_j: a bias of
rank at most H + W. Building it as a dense (B, heads, N, N) ``attn_mask``
costs 805 MB per ViT-B global block at 1024 px (N = 4096), 5.4 GB per ViT-g
global block at 1536 px, and keeps ``F.scaled_dot_product_attention`` off its
fused kernels in training. Two exact ways avoid it, one per device:

- ``'fold'`` (CUDA): append ``rel_h`` and ``rel_w`` to q and one-hot row and
  column indicators of each key to k, so that ``q'.k'`` is
  ``scale * q.k + bias``; one ``scaled_dot_product_attention`` call with no
  mask runs on the fused kernels. The head dimension grows to
  d + H + W (rounded up to a multiple of 8, the kernels' alignment).
- ``'blocked'`` (CPU): attention computed block by block of queries, with
  the two small bias terms added to each block of logits, saving only the
  log-sum-exp for the backward pass, which recomputes the logits (the flash
  attention algorithm, in PyTorch ops). On the CPU the fused kernel's cost
  grows with the head dimension: at 1024 px the fold's d' = 192 makes it
  slower than the dense bias, while the blocked form does the work of plain
  d = 64 attention on cache-sized blocks (see docs/benchmark.md).
- ``'direct'`` (CPU, small calls): the official arithmetic, the two terms
  added to a (H, W) view of the full logits; it keeps the probabilities,
  N x N per head, and is taken only where they are small and it is
  measurably faster (``_DIRECT_MAX_LOGITS``).

The blocked kernel is a ``torch.library`` custom op and the others plain
PyTorch ops, so ``torch.compile`` traces the model through all of them with
no graph break.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .pos_embed import resize_rel_pos

# Logits per block of the 'blocked' kernel: 2**20 fp32 values (4 MiB) keep a
# block and its exponentials in the cache; larger blocks were slower on the
# 2-core benchmark machine, smaller ones pay more per-call overhead.
_BLOCK_ELEMENTS = 1 << 20
# Up to this many logits per call (ViT-B's windows at 512 px: 4.1M) the CPU
# runs the direct formula, which keeps the probabilities (16 MiB in fp32
# there) and is faster than the blocked kernel (forward + backward: fp32
# 0.062 s vs 0.076 s, bf16 0.042 s vs 0.044 s); above it (ViT-B's windows
# at 1024 px, 11.5M; its global attention at 512 px, 12.6M) the blocked
# kernel is as fast or faster, by up to 1.7x, and keeps no N x N tensor
# (tools/analysis/rel_pos_attention_benchmark.py, docs/benchmark.md).
_DIRECT_MAX_LOGITS = 1 << 23
# The CUDA kernels take head dimensions in multiples of 8 (16-bit types).
_HEAD_DIM_ALIGN = 8
# FlashAttention on CUDA stops at this head dimension; beyond it PyTorch
# runs the memory-efficient kernel, which takes a value dimension that
# differs from the query's.
_FLASH_MAX_HEAD_DIM = 256


def _rel_pos_lookup(table: Tensor, size: int) -> Tensor:
    """Look up a ViTDet decomposed table for a ``size``-long axis.

    Returns:
        Tensor of shape (size, size, head_dim): entry [i, j] embeds i - j.
    """
    table = resize_rel_pos(table, 2 * size - 1)
    coords = torch.arange(size, device=table.device)
    return table[coords[:, None] - coords[None, :] + size - 1]


def decomposed_rel_pos_logits(q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor,
                              hw: Tuple[int, int],
                              num_extra_tokens: int = 0
                              ) -> Tuple[Tensor, Tensor]:
    """The two factors of ViTDet's relative position term.

    Args:
        q: Unscaled queries (B, heads, extra + H * W, d).
        rel_pos_h: Table (2H' - 1, d) of the vertical offsets; other lengths
            are resized linearly (ViTDet's run-time resize).
        rel_pos_w: Table (2W' - 1, d) of the horizontal offsets.
        hw: The patch grid (H, W).
        num_extra_tokens: Leading cls-like queries; they get no term (zero
            rows).

    Returns:
        ``rel_h`` (B, heads, N, H) and ``rel_w`` (B, heads, N, W): query i
        gets ``rel_h[i, h_j] + rel_w[i, w_j]`` for key j on the grid.
    """
    h, w = hw
    b, heads, _, dim = q.shape
    q_grid = q[:, :, num_extra_tokens:].reshape(b, heads, h, w, dim)
    rel_h = torch.einsum('bnhwc,hkc->bnhwk', q_grid,
                         _rel_pos_lookup(rel_pos_h, h))
    rel_w = torch.einsum('bnhwc,wkc->bnhwk', q_grid,
                         _rel_pos_lookup(rel_pos_w, w))
    rel_h = rel_h.reshape(b, heads, h * w, h)
    rel_w = rel_w.reshape(b, heads, h * w, w)
    if num_extra_tokens:
        rel_h = F.pad(rel_h, (0, 0, num_extra_tokens, 0))
        rel_w = F.pad(rel_w, (0, 0, num_extra_tokens, 0))
    return rel_h, rel_w


def key_grid_indicators(h: int, w: int, num_extra_tokens: int,
                        dtype: torch.dtype, device: torch.device) -> Tensor:
    """One-hot row and column of every key: (extra + H * W, H + W).

    Extra (cls) keys get zero rows: no relative term.
    """
    index = torch.arange(h * w, device=device)
    rows = F.one_hot(index // w, h)
    cols = F.one_hot(index % w, w)
    indicators = torch.cat([rows, cols], dim=1).to(dtype)
    return F.pad(indicators, (0, 0, num_extra_tokens, 0))


def _fold_attention(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor,
                    rel_w: Tensor, scale: float, indicators: Tensor,
                    dropout_p: float) -> Tensor:
    """Attention with the bias folded into q and k (see the module doc)."""
    b, heads, n_keys, dim = k.shape
    q_fold = torch.cat(
        [q * scale, rel_h.to(q.dtype),
         rel_w.to(q.dtype)], dim=-1)
    k_fold = torch.cat(
        [k, indicators.to(k.dtype).expand(b, heads, n_keys, -1)], dim=-1)
    folded_dim = q_fold.shape[-1]
    pad = -folded_dim % _HEAD_DIM_ALIGN
    if pad:  # zero columns leave every q'.k' unchanged
        q_fold, k_fold = F.pad(q_fold, (0, pad)), F.pad(k_fold, (0, pad))
        folded_dim += pad
    # FlashAttention (CPU; CUDA fp16/bf16 up to 256) needs a value of the
    # query's dimension: pad v with zero columns and cut them off after.
    # Past 256 on CUDA the memory-efficient kernel takes v as it is.
    pad_value = (q.device.type != 'cuda'
                 or (q.dtype in (torch.float16, torch.bfloat16)
                     and folded_dim <= _FLASH_MAX_HEAD_DIM))
    if pad_value:
        v = F.pad(v, (0, folded_dim - dim))
    out = F.scaled_dot_product_attention(
        q_fold, k_fold, v, dropout_p=dropout_p, scale=1.0)
    return out[..., :dim] if pad_value else out


def _blocks(num_rows: int, num_queries: int, num_keys: int):
    """(row range, query range) pairs that cover the logits in blocks of
    about ``_BLOCK_ELEMENTS``: several (batch, head) rows of all queries
    when they fit (windows), else query chunks of one row (global)."""
    queries = max(1, _BLOCK_ELEMENTS // num_keys)
    if queries >= num_queries:
        rows, queries = max(1, queries // num_queries), num_queries
    else:
        rows = 1
    for row in range(0, num_rows, rows):
        for start in range(0, num_queries, queries):
            yield (slice(row, min(row + rows, num_rows)),
                   slice(start, min(start + queries, num_queries)))


def _accumulation_dtype(t: Tensor) -> torch.dtype:
    """fp32 for 16-bit inputs (as the fused kernels), else the input's."""
    return torch.promote_types(t.dtype, torch.float32)


def _block_logits(q_scaled: Tensor, k_t: Tensor, rel_h: Tensor,
                  rel_w: Tensor, num_extra_tokens: int) -> Tensor:
    """Logits (rows, queries, keys) of one block, bias included, in the
    accumulation dtype; the scale is in the queries already (one pass over
    N x d instead of one over N x N)."""
    acc = _accumulation_dtype(q_scaled)
    logits = torch.matmul(q_scaled, k_t).to(acc)
    rows, queries = logits.shape[:2]
    h, w = rel_h.shape[-1], rel_w.shape[-1]
    grid = logits[..., num_extra_tokens:].view(rows, queries, h, w)
    grid.add_(rel_h.to(acc)[..., None]).add_(rel_w.to(acc)[..., None, :])
    return logits


@torch.library.custom_op('eva_mm::rel_pos_attention_fwd', mutates_args=())
def _blocked_forward(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor,
                     rel_w: Tensor, scale: float,
                     num_extra_tokens: int) -> Tuple[Tensor, Tensor]:
    """Blocked forward on (rows, N, d) inputs: output and log-sum-exp (in
    the accumulation dtype)."""
    with torch.autocast(q.device.type, enabled=False):
        return _blocked_forward_impl(q, k, v, rel_h, rel_w, scale,
                                     num_extra_tokens)


def _blocked_forward_impl(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor,
                          rel_w: Tensor, scale: float,
                          num_extra_tokens: int) -> Tuple[Tensor, Tensor]:
    out = torch.empty_like(q)
    lse = q.new_empty(q.shape[:2], dtype=_accumulation_dtype(q))
    # Every matrix product below reads row-major operands and writes a wide
    # output: on the CPU the transposed forms run several times slower
    # (4-7x in bf16), so k^T is made contiguous once.
    q_scaled, k_t = q * scale, k.transpose(1, 2).contiguous()
    for rows, queries in _blocks(q.shape[0], q.shape[1], k.shape[1]):
        logits = _block_logits(q_scaled[rows, queries], k_t[rows],
                               rel_h[rows, queries], rel_w[rows, queries],
                               num_extra_tokens)
        top = logits.amax(dim=-1, keepdim=True)
        probs = logits.sub_(top).exp_()
        total = probs.sum(dim=-1, keepdim=True)
        block = torch.matmul(probs.to(v.dtype), v[rows]).to(probs.dtype)
        out[rows, queries] = block.div_(total).to(out.dtype)
        lse[rows, queries] = top.add_(total.log_()).squeeze(-1)
    return out, lse


@_blocked_forward.register_fake
def _(q, k, v, rel_h, rel_w, scale, num_extra_tokens):
    return (torch.empty_like(q),
            q.new_empty(q.shape[:2], dtype=_accumulation_dtype(q)))


@torch.library.custom_op('eva_mm::rel_pos_attention_bwd', mutates_args=())
def _blocked_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor,
                      rel_h: Tensor, rel_w: Tensor, out: Tensor, lse: Tensor,
                      scale: float, num_extra_tokens: int
                      ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`_blocked_forward`, logits recomputed per block."""
    with torch.autocast(q.device.type, enabled=False):
        return _blocked_backward_impl(grad_out, q, k, v, rel_h, rel_w, out,
                                      lse, scale, num_extra_tokens)


def _blocked_backward_impl(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor,
                           rel_h: Tensor, rel_w: Tensor, out: Tensor,
                           lse: Tensor, scale: float, num_extra_tokens: int
                           ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    grad_out = grad_out.to(q.dtype)
    acc = _accumulation_dtype(q)
    # d softmax: dS = P * (dP - rowsum(dO * O)).
    delta = (grad_out.to(acc) * out.to(acc)).sum(dim=-1)
    grad_q = torch.empty_like(q)
    # dK and dV accumulate transposed, (rows, d, N): dS^T q written as
    # (q^T dS) is the fast form of the product (see the forward).
    grad_k_t = k.new_zeros(k.transpose(1, 2).shape, dtype=acc)
    grad_v_t = v.new_zeros(v.transpose(1, 2).shape, dtype=acc)
    grad_rel_h = torch.empty_like(rel_h)
    grad_rel_w = torch.empty_like(rel_w)
    q_scaled = q * scale
    k_t = k.transpose(1, 2).contiguous()
    v_t = v.transpose(1, 2).contiguous()
    h, w = rel_h.shape[-1], rel_w.shape[-1]
    for rows, queries in _blocks(q.shape[0], q.shape[1], k.shape[1]):
        q_block, grad_block = q_scaled[rows, queries], grad_out[rows,
                                                                queries]
        logits = _block_logits(q_block, k_t[rows], rel_h[rows, queries],
                               rel_w[rows, queries], num_extra_tokens)
        probs = logits.sub_(lse[rows, queries, None]).exp_()
        grad_v_t[rows] += torch.matmul(grad_block.transpose(1, 2),
                                       probs.to(v.dtype)).to(acc)
        grad_logits = torch.matmul(grad_block, v_t[rows]).to(acc)
        grad_logits.sub_(delta[rows, queries, None]).mul_(probs)
        grid = grad_logits[..., num_extra_tokens:].view(*probs.shape[:2], h,
                                                        w)
        grad_rel_h[rows, queries] = grid.sum(dim=-1).to(rel_h.dtype)
        grad_rel_w[rows, queries] = grid.sum(dim=-2).to(rel_w.dtype)
        grad_logits = grad_logits.to(q.dtype)
        grad_q[rows, queries] = torch.matmul(grad_logits, k[rows])
        # q_block holds the scale: this is scale * q^T dS.
        grad_k_t[rows] += torch.matmul(q_block.transpose(1, 2),
                                       grad_logits).to(acc)
    return (grad_q.mul_(scale), grad_k_t.transpose(1, 2).to(k.dtype),
            grad_v_t.transpose(1, 2).to(v.dtype), grad_rel_h, grad_rel_w)


def _transposed_empty(t: Tensor) -> Tensor:
    """An empty tensor shaped as ``t`` in the (rows, d, N) memory layout
    that dK and dV are accumulated in."""
    return t.new_empty(t.transpose(1, 2).shape).transpose(1, 2)


@_blocked_backward.register_fake
def _(grad_out, q, k, v, rel_h, rel_w, out, lse, scale, num_extra_tokens):
    # Strides as the real kernel's: compiled graphs assert them.
    return (torch.empty_like(q), _transposed_empty(k), _transposed_empty(v),
            torch.empty_like(rel_h), torch.empty_like(rel_w))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, rel_h, rel_w, scale, num_extra_tokens = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, rel_h, rel_w, out, lse)
    ctx.scale, ctx.num_extra_tokens = scale, num_extra_tokens
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out: Tensor, grad_lse: Optional[Tensor]):
    grads = _blocked_backward(grad_out, *ctx.saved_tensors, ctx.scale,
                              ctx.num_extra_tokens)
    return (*grads, None, None)


torch.library.register_autograd(
    _blocked_forward, _backward, setup_context=_setup_context)


def _blocked_attention(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor,
                       rel_w: Tensor, scale: float,
                       num_extra_tokens: int) -> Tensor:
    b, heads, n, dim = q.shape

    def rows(t: Tensor) -> Tensor:
        return t.reshape(b * heads, *t.shape[2:])

    out, _ = _blocked_forward(
        rows(q), rows(k), rows(v), rows(rel_h.to(q.dtype)),
        rows(rel_w.to(q.dtype)), scale, num_extra_tokens)
    return out.reshape(b, heads, n, dim)


def _direct_attention(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor,
                      rel_w: Tensor, scale: float,
                      num_extra_tokens: int) -> Tensor:
    """The logits in full, the two terms added to their (H, W) view, softmax
    and the product with v: the official arithmetic (vit.py:122-139), which
    keeps the probabilities for the backward pass."""
    extra, (h, w) = num_extra_tokens, (rel_h.shape[-1], rel_w.shape[-1])
    logits = torch.matmul(q * scale, k.transpose(-2, -1))
    grid = (logits[..., extra:].unflatten(-1, (h, w)) + rel_h[..., None] +
            rel_w[..., None, :]).flatten(-2)
    if extra:
        grid = torch.cat([logits[..., :extra], grid], dim=-1)
    return torch.matmul(grid.softmax(dim=-1).to(v.dtype), v)


def _fastest_impl(q: Tensor, k: Tensor, dropout_p: float) -> str:
    """The fastest exact formulation on this device (module doc)."""
    if q.device.type != 'cpu' or dropout_p:
        return 'fold'
    logits = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
    return 'direct' if logits <= _DIRECT_MAX_LOGITS else 'blocked'


def decomposed_rel_pos_attention(q: Tensor,
                                 k: Tensor,
                                 v: Tensor,
                                 rel_h: Tensor,
                                 rel_w: Tensor,
                                 scale: float,
                                 indicators: Optional[Tensor] = None,
                                 num_extra_tokens: int = 0,
                                 dropout_p: float = 0.,
                                 impl: Optional[str] = None) -> Tensor:
    """softmax(scale * q k^T + rel_h[i, h_j] + rel_w[i, w_j]) v, exactly.

    Args:
        q: Queries (B, heads, N, d), N = extra + H * W.
        k: Keys, same shape.
        v: Values, same shape.
        rel_h: (B, heads, N, H) from :func:`decomposed_rel_pos_logits`.
        rel_w: (B, heads, N, W).
        scale: Scale of q.k (head_dim ** -0.5).
        indicators: The keys' one-hot rows and columns,
            :func:`key_grid_indicators` (the fold needs them; built here if
            not given).
        num_extra_tokens: Leading keys off the grid (cls): no term.
        dropout_p: Dropout on the attention weights (the fold only).
        impl: ``'fold'``, ``'blocked'`` or ``'direct'``; ``None`` picks the
            fastest for the device and size (``'fold'`` on CUDA or with
            dropout, on the CPU ``'direct'`` for small calls and
            ``'blocked'`` otherwise; the module doc says why).

    Returns:
        Tensor (B, heads, N, d).
    """
    if impl is None:
        impl = _fastest_impl(q, k, dropout_p)
    if impl == 'direct':
        return _direct_attention(q, k, v, rel_h, rel_w, scale,
                                 num_extra_tokens)
    if impl == 'blocked':
        if dropout_p:
            raise ValueError("The 'blocked' attention has no dropout: use "
                             "impl='fold'.")
        return _blocked_attention(q, k, v, rel_h, rel_w, scale,
                                  num_extra_tokens)
    if impl != 'fold':
        raise ValueError(f"impl must be 'fold', 'blocked', 'direct' or "
                         f'None, got {impl!r}.')
    if indicators is None:
        indicators = key_grid_indicators(rel_h.shape[-1], rel_w.shape[-1],
                                         num_extra_tokens, q.dtype, q.device)
    return _fold_attention(q, k, v, rel_h, rel_w, scale, indicators,
                           dropout_p)
