"""Attention without an N x N bias (issue #20): exact against the dense
formula, in every geometry, with no graph break under torch.compile.

The reference is the plain formula softmax(q k^T / sqrt(d) + bias) v with
ViTDet's bias built as a dense tensor from tables indexed by loops
(``reference_decomposed_bias``), the way the official EVA-01 detector adds
it (EVA-01/det/detectron2/modeling/backbone/utils.py:121-150).
"""
from typing import Dict, List, Tuple

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

from eva_mm.models.backbones.eva_vit import EVAViT
from eva_mm.models.backbones.eva_vit_adapter import EVAViTAdapter
from eva_mm.models.layers import attention as attention_module
from eva_mm.models.layers import rel_pos_attention
from eva_mm.models.layers.attention import (EVAAttention, TokenPositions,
                                            attention_formula_is_faster,
                                            scaled_dot_product_attention)
from eva_mm.models.layers.pos_embed import resize_rel_pos
from eva_mm.models.layers.rel_pos_attention import (
    decomposed_rel_pos_attention, decomposed_rel_pos_logits)
from test_models.test_eva_vit import (TINY, count_saved_tensors,
                                     reference_decomposed_bias)

IMPLS = ('blocked', 'fold', 'direct')


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                    hw: Tuple[int, int], num_extra_tokens: int,
                    scale: float) -> torch.Tensor:
    """softmax(scale q k^T + bias) v with the bias as a dense tensor."""
    bias = reference_decomposed_bias(q, rel_pos_h, rel_pos_w, *hw,
                                     num_extra_tokens)
    logits = scale * q @ k.transpose(-1, -2) + bias
    return logits.softmax(dim=-1) @ v


def random_inputs(batch: int, heads: int, hw: Tuple[int, int], extra: int,
                  dim: int, dtype: torch.dtype) -> List[torch.Tensor]:
    n = extra + hw[0] * hw[1]
    tensors = [torch.randn(batch, heads, n, dim, dtype=dtype)
               for _ in range(3)]
    tensors += [torch.randn(2 * size - 1, dim, dtype=dtype) for size in hw]
    return [t.requires_grad_() for t in tensors]


def outputs_and_grads(fn, inputs: List[torch.Tensor], grad_out: torch.Tensor
                      ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
    out = fn(*inputs)
    return out, torch.autograd.grad(out, inputs, grad_out)


# (grid, extra tokens, batch, logits per block of the blocked kernel): one
# block, several blocks of whole (batch, head) rows (windows), and query
# chunks of one row (global grids), square and not.
GEOMETRIES = [
    ((4, 4), 0, 1, 1 << 20),
    ((3, 5), 1, 3, 1 << 20),
    ((5, 7), 0, 2, 40),
    ((6, 4), 1, 2, 100),
    ((2, 3), 0, 5, 24),
]


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('hw,extra,batch,block', GEOMETRIES)
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10),
                                       (torch.float32, 1e-5)])
def test_kernels_equal_the_dense_formula(impl, hw, extra, batch, block,
                                         dtype, tol, monkeypatch) -> None:
    monkeypatch.setattr(rel_pos_attention, '_BLOCK_ELEMENTS', block)
    torch.manual_seed(0)
    inputs = random_inputs(batch, 2, hw, extra, 8, dtype)
    scale = 8**-0.5

    def new(q, k, v, table_h, table_w):
        rel_h, rel_w = decomposed_rel_pos_logits(q, table_h, table_w, hw,
                                                 extra)
        return decomposed_rel_pos_attention(
            q, k, v, rel_h, rel_w, scale, num_extra_tokens=extra, impl=impl)

    def dense(q, k, v, table_h, table_w):
        return dense_attention(q, k, v, table_h, table_w, hw, extra, scale)

    grad_out = torch.randn(inputs[0].shape, dtype=dtype)
    out, grads = outputs_and_grads(new, inputs, grad_out)
    ref, ref_grads = outputs_and_grads(dense, inputs, grad_out)
    torch.testing.assert_close(out, ref, rtol=0, atol=tol)
    for name, grad, ref_grad in zip(('q', 'k', 'v', 'rel_pos_h', 'rel_pos_w'),
                                    grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=tol,
                                   msg=name)
    # The relative term really matters here.
    plain = F.scaled_dot_product_attention(*inputs[:3])
    assert (plain - ref).abs().max() > 1e-2


@pytest.mark.parametrize('dtype,hw,windows,impl', [
    (torch.float32, (14, 14), 9, 'direct'),  # ViT-B's windows at 512 px
    (torch.float32, (14, 14), 25, 'blocked'),  # at 1024 px
    (torch.float32, (64, 64), 1, 'blocked'),
    (torch.bfloat16, (14, 14), 9, 'direct'),  # ViT-B's windows at 512 px
    (torch.bfloat16, (14, 14), 25, 'blocked'),  # at 1024 px
    (torch.bfloat16, (64, 64), 1, 'blocked'),
])
def test_the_cpu_picks_by_dtype_and_size(dtype, hw, windows, impl) -> None:
    q = torch.empty(windows, 12, hw[0] * hw[1], 64, dtype=dtype)
    assert rel_pos_attention._fastest_impl(q, q, 0.) == impl
    assert rel_pos_attention._fastest_impl(q, q, 0.1) == 'fold'


def test_blocked_kernel_under_bf16_autocast_is_close() -> None:
    torch.manual_seed(0)
    hw = (6, 6)
    inputs = random_inputs(2, 2, hw, 0, 16, torch.float32)
    rel_h, rel_w = decomposed_rel_pos_logits(*inputs[:1], *inputs[3:], hw)
    ref = dense_attention(*inputs, hw, 0, 0.25)
    with torch.autocast('cpu', torch.bfloat16):
        q, k, v = (t.bfloat16() for t in inputs[:3])
        out = decomposed_rel_pos_attention(
            q, k, v, rel_h.bfloat16(), rel_w.bfloat16(), 0.25,
            impl='blocked')
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=3e-2)


@pytest.mark.parametrize('extra', [0, 1])
def test_custom_ops_pass_opcheck(extra: int) -> None:
    """The blocked kernel's ops as torch.compile sees them: schemas, fake
    kernels (shapes, dtypes and strides of the real outputs) and the
    autograd registration, on a non-contiguous q as a qkv split gives."""
    torch.manual_seed(0)
    rows, h, w, dim = 3, 3, 4, 8
    n = extra + h * w
    qkv = torch.randn(rows, n, 3, dim, dtype=torch.float64)
    q, k, v = (t.requires_grad_() for t in qkv.clone().unbind(2))
    rel_h = torch.randn(rows, n, h, dtype=torch.float64, requires_grad=True)
    rel_w = torch.randn(rows, n, w, dtype=torch.float64, requires_grad=True)
    args = (q, k, v, rel_h, rel_w, 0.5, extra)
    torch.library.opcheck(rel_pos_attention._blocked_forward, args)
    # The backward op has no backward of its own: plain tensors.
    q, k, v, rel_h, rel_w = (t.detach() for t in args[:5])
    out, lse = rel_pos_attention._blocked_forward(*args)
    torch.library.opcheck(
        rel_pos_attention._blocked_backward,
        (torch.randn_like(out), q, k, v, rel_h, rel_w, out.detach(), lse,
         0.5, extra))


@pytest.mark.parametrize('impl', ['blocked', 'fold'])
def test_training_keeps_no_n_by_n_tensor(impl: str) -> None:
    """What autograd keeps for the backward pass of a global block, on the
    paths taken above ``_DIRECT_MAX_LOGITS`` (CPU) and on CUDA."""
    torch.manual_seed(0)
    hw, extra = (16, 16), 1
    n = extra + hw[0] * hw[1]
    inputs = random_inputs(2, 2, hw, extra, 8, torch.float32)
    scale = 8**-0.5

    def saved_numels(fn) -> List[int]:
        numels = []

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            numels.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(*inputs).sum().backward()
        return numels

    def new(q, k, v, table_h, table_w):
        rel_h, rel_w = decomposed_rel_pos_logits(q, table_h, table_w, hw,
                                                 extra)
        return decomposed_rel_pos_attention(
            q, k, v, rel_h, rel_w, scale, num_extra_tokens=extra, impl=impl)

    # Per (batch, head) the dense formula keeps N x N logits; the new ones
    # at most N x (d + H + W).
    assert max(saved_numels(
        lambda *t: dense_attention(*t, hw, extra, scale))) >= 2 * 2 * n * n
    assert max(saved_numels(new)) < 2 * 2 * n * (8 + sum(hw)) + 1


# ----------------------------------------------------------------------
# Whole models: every geometry against the dense formula
# ----------------------------------------------------------------------
def dense_decomposed_attention(self: EVAAttention, q, k, v,
                               positions: TokenPositions) -> torch.Tensor:
    """EVAAttention's decomposed path written as the dense formula (tables
    of another size resized first, as ViTDet does at run time)."""
    h, w = positions.hw
    return dense_attention(q, k, v, resize_rel_pos(self.rel_pos_h, 2 * h - 1),
                           resize_rel_pos(self.rel_pos_w, 2 * w - 1),
                           (h, w), self.num_extra_tokens, self.scale)


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Non-zero relative tables and biases, so that every term counts."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if 'rel_pos' in name or name.endswith('_bias'):
                param.normal_(std=0.5)
    return model.double()


def model_outputs_and_grads(model: torch.nn.Module, x: torch.Tensor
                            ) -> Tuple[List[torch.Tensor],
                                       Dict[str, torch.Tensor]]:
    model.zero_grad()
    outs = model(x)
    gen = torch.Generator().manual_seed(1)
    sum((out * torch.randn(out.shape, generator=gen,
                           dtype=out.dtype)).sum() for out in outs).backward()
    return list(outs), {
        name: param.grad.clone()
        for name, param in model.named_parameters()
        if param.grad is not None
    }


DET = dict(
    arch=TINY, img_size=64, patch_size=8, with_cls_token=False,
    out_type='featmap', final_norm=False, rel_pos='decomposed',
    window_size=3, global_block_indexes=(1, 3))
MODEL_CASES = {
    # 7x6 grid: windows of 3 padded to 9x6, global blocks 7x6.
    'windows_padded_nonsquare': (lambda: EVAViT(**DET), (2, 3, 56, 48)),
    'cls_global_batch3': (lambda: EVAViT(
        arch=TINY, img_size=32, patch_size=8, rel_pos='decomposed',
        out_type='raw'), (3, 3, 32, 40)),
    'adapter_cls': (lambda: EVAViTAdapter(
        arch=TINY, img_size=64, patch_size=16, deform_num_heads=4,
        conv_inplane=8, norm_cfg=dict(type='BN'),
        rel_pos='decomposed'), (1, 3, 64, 96)),
}


@pytest.mark.parametrize('case', sorted(MODEL_CASES))
def test_models_equal_the_dense_formula_in_float64(case, monkeypatch) -> None:
    build, shape = MODEL_CASES[case]
    torch.manual_seed(0)
    model = perturbed(build()).train()
    x = torch.randn(shape, dtype=torch.float64)
    outs, grads = model_outputs_and_grads(model, x)
    assert any('rel_pos_h' in name for name in grads)
    monkeypatch.setattr(EVAAttention, '_decomposed_attention',
                        dense_decomposed_attention)
    ref_outs, ref_grads = model_outputs_and_grads(model, x)
    for out, ref in zip(outs, ref_outs):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=0, atol=1e-10,
                                   msg=name)


def test_video_attention_sees_the_time_axis() -> None:
    model = EVAViT(arch=TINY, img_size=32, patch_size=8, num_frames=4,
                   tubelet_size=2)
    seen = []
    model.blocks[0].attn.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs['positions'].grid),
        with_kwargs=True)
    model(torch.randn(1, 3, 4, 32, 24))
    assert seen == [(2, 4, 3)]


# ----------------------------------------------------------------------
# BEiT's bias and RoPE
# ----------------------------------------------------------------------
def test_beit_index_is_built_once_per_forward(monkeypatch) -> None:
    calls = []
    build = attention_module.gen_relative_position_index

    def counted(*args, **kwargs):
        calls.append(args[0])
        return build(*args, **kwargs)

    monkeypatch.setattr(attention_module, 'gen_relative_position_index',
                        counted)
    model = EVAViT(arch=TINY, img_size=32, patch_size=8, rel_pos='bias')
    for _ in range(2):
        model(torch.randn(2, 3, 32, 32))
    assert calls == [(4, 4), (4, 4)]  # four blocks, one index per forward


@pytest.mark.parametrize('kwargs', [
    dict(arch='eva02-tiny', img_size=32, patch_size=16),
    dict(arch='eva02-tiny', img_size=64, patch_size=16, window_size=2,
         with_cls_token=False, out_type='featmap',
         global_block_indexes=(2, 5, 8, 11)),
    dict(arch=TINY, img_size=32, patch_size=8),
])
def test_rope_and_plain_attention_reach_the_fused_kernel(
        kwargs, monkeypatch) -> None:
    calls = []
    sdpa = F.scaled_dot_product_attention

    def recorded(q, k, v, attn_mask=None, dropout_p=0., **rest):
        calls.append((attn_mask, torch._fused_sdp_choice(
            q, k, v, attn_mask, dropout_p, False)))
        return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                    **rest)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', recorded)
    model = EVAViT(**kwargs).train()
    model(torch.randn(2, 3, 64, 64)).__getitem__(0).mean().backward()
    assert len(calls) == len(model.blocks)
    flash = int(SDPBackend.FLASH_ATTENTION)
    assert all(mask is None and choice == flash for mask, choice in calls)


@pytest.mark.parametrize('with_mask', [False, True])
def test_attention_formula_and_fused_call_equal_the_formula_in_float64(
        with_mask: bool) -> None:
    torch.manual_seed(0)
    inputs = [torch.randn(2, 3, 10, 8, dtype=torch.float64) for _ in 'qkv']
    if with_mask:  # BEiT's bias: per head, broadcast over the batch
        inputs.append(torch.randn(1, 3, 10, 10, dtype=torch.float64))
    inputs = [t.requires_grad_() for t in inputs]
    grad_out = torch.randn(2, 3, 10, 8, dtype=torch.float64)

    def by_hand(q, k, v, bias=0.):
        return ((q @ k.transpose(-1, -2)) / 8**0.5 + bias).softmax(-1) @ v

    ref, ref_grads = outputs_and_grads(by_hand, inputs, grad_out)
    for formula in (True, False):
        out, grads = outputs_and_grads(
            lambda *t: scaled_dot_product_attention(*t, formula=formula),
            inputs, grad_out)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        for grad, ref_grad in zip(grads, ref_grads):
            torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize('dtype,shape,dropout,formula', [
    (torch.bfloat16, (1, 12, 1025, 64), 0., True),  # ViT-B 512 px, global
    (torch.float16, (25, 12, 196, 64), 0., True),  # 1024 px windows
    (torch.bfloat16, (1, 12, 4096, 64), 0., False),  # 1024 px, global
    (torch.bfloat16, (1, 12, 1025, 64), 0.1, False),
    (torch.float32, (1, 12, 1025, 64), 0., False),
])
def test_plain_attention_takes_the_formula_for_small_16_bit_cpu_calls(
        dtype, shape, dropout, formula) -> None:
    q = torch.empty(shape, dtype=dtype)
    assert attention_formula_is_faster(q, q, dropout) is formula


@pytest.mark.parametrize('kwargs', [
    dict(arch='eva02-tiny', img_size=32, patch_size=16),
    dict(arch=TINY, img_size=32, patch_size=8, rel_pos='bias'),
])
def test_models_on_the_attention_formula_equal_the_fused_call(
        kwargs, monkeypatch) -> None:
    """Whole models (RoPE; BEiT's bias) in float64 with every attention
    call forced onto the formula, against the fused call."""
    torch.manual_seed(0)
    model = perturbed(EVAViT(**kwargs)).train()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ref_outs, ref_grads = model_outputs_and_grads(model, x)
    monkeypatch.setattr(attention_module, 'attention_formula_is_faster',
                        lambda *args: True)
    outs, grads = model_outputs_and_grads(model, x)
    for out, ref in zip(outs, ref_outs):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=0, atol=1e-10,
                                   msg=name)


# ----------------------------------------------------------------------
# torch.compile: no graph break in any geometry
# ----------------------------------------------------------------------
DYNAMO_CASES = {
    'windows_decomposed': (DET, (2, 3, 56, 48)),
    'cls_decomposed': (dict(arch=TINY, img_size=32, patch_size=8,
                            rel_pos='decomposed'), (1, 3, 32, 40)),
    'cls_bias': (dict(arch=TINY, img_size=32, patch_size=8,
                      rel_pos='bias'), (2, 3, 32, 32)),
    'eva02_rope_windows': (dict(
        arch='eva02-tiny', img_size=64, patch_size=16,
        with_cls_token=False, out_type='featmap', window_size=2,
        global_block_indexes=(2, 5, 8, 11)), (1, 3, 64, 48)),
    'video': (dict(arch=TINY, img_size=32, patch_size=8, num_frames=4,
                   tubelet_size=2), (1, 3, 4, 32, 32)),
    'checkpoint_global': (dict(DET, with_cp='global'), (1, 3, 48, 48)),
    'checkpoint_attn': (dict(DET, with_cp='attn'), (1, 3, 48, 48)),
    'checkpoint_all': (dict(DET, with_cp=True), (1, 3, 48, 48)),
}


@pytest.mark.parametrize('cpu_path', ['direct', 'blocked'])
@pytest.mark.parametrize('case', sorted(DYNAMO_CASES))
def test_no_graph_break(case, cpu_path, monkeypatch) -> None:
    """Tiny calls take the direct formula; the blocked kernel, which real
    sizes take, is forced by a zero threshold."""
    if cpu_path == 'blocked':
        monkeypatch.setattr(rel_pos_attention, '_DIRECT_MAX_LOGITS', 0)
    kwargs, shape = DYNAMO_CASES[case]
    model = EVAViT(**kwargs).train()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(torch.randn(shape))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_mim_masked_forward_has_no_graph_break() -> None:
    model = EVAViT(arch=TINY, img_size=32, patch_size=8,
                   with_mask_token=True, out_type='raw')
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, 1:3, 2] = True
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 32, 32),
                                              mask)
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.slow
def test_compiled_backbone_equals_eager(monkeypatch) -> None:
    # The blocked kernel (a custom op) as at real sizes, not the direct
    # formula that tiny calls take.
    monkeypatch.setattr(rel_pos_attention, '_DIRECT_MAX_LOGITS', 0)
    torch.manual_seed(0)
    eager = perturbed(EVAViT(**DET)).float().train()
    compiled = EVAViT(compile=True, **DET).train()
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 56, 48)
    for model in (eager, compiled):
        model(x)[0].square().mean().backward()
    torch.testing.assert_close(compiled(x)[0], eager(x)[0], rtol=0,
                               atol=1e-5)
    grads = dict(eager.named_parameters())
    for name, param in compiled.named_parameters():
        torch.testing.assert_close(param.grad, grads[name].grad, rtol=1e-4,
                                   atol=1e-5, msg=name)


# ----------------------------------------------------------------------
# Activation checkpointing modes
# ----------------------------------------------------------------------
def test_checkpoint_modes_give_identical_results_and_keep_less() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 56, 48)
    counts, results = {}, {}
    for mode in (False, 'attn', 'global', True):
        torch.manual_seed(0)
        model = perturbed(EVAViT(**dict(DET, with_cp=mode))).float().train()
        results[mode] = model_outputs_and_grads(model, x)
        counts[mode] = count_saved_tensors(model, x)
    plain_outs, plain_grads = results[False]
    for mode in ('attn', 'global', True):
        outs, grads = results[mode]
        for out, ref in zip(outs, plain_outs):
            torch.testing.assert_close(out, ref, rtol=0, atol=0)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, plain_grads[name], rtol=0,
                                       atol=0, msg=f'{mode}: {name}')
    # All blocks < the global blocks (2 of 4) or the attention of all.
    assert counts[True] < counts['global'] < counts[False]
    assert counts[True] < counts['attn'] < counts[False]


def test_unknown_checkpoint_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="with_cp must be one of"):
        EVAViT(arch=TINY, with_cp='blocks')
