"""Behaviour of EVAViT and its layers, checked against hand-written references.

Tiny architectures at 32-48 px keep the file fast on CPU; references run in
float64 so that they can be compared tightly with the optimised code paths
(fused ``qkv``, ``F.scaled_dot_product_attention``, vectorised window
partitioning and relative-position look-ups).
"""
import math
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS as MMENGINE_MODELS

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.models import EVAViT
from eva_mm.models.layers import (EVAAttention, EVABlock, TokenPositions,
                                  resize_pos_embed)

TINY = dict(embed_dims=64, num_layers=4, num_heads=2, mlp_hidden_dim=128)
PATCH = 8


def tiny_vit(**kwargs) -> EVAViT:
    """A 4-block, 64-wide EVAViT on 8 px patches of 32 px images."""
    kwargs.setdefault('img_size', 32)
    kwargs.setdefault('patch_size', PATCH)
    return EVAViT(arch=TINY, **kwargs)


def same_weights(model: EVAViT, **kwargs) -> EVAViT:
    """Another tiny EVAViT built with ``kwargs`` and ``model``'s weights.

    Only a final ``norm``/``fc_norm`` that one of the two lacks may differ.
    """
    other = tiny_vit(**kwargs).to(next(model.parameters()).dtype)
    result = other.load_state_dict(model.state_dict(), strict=False)
    assert {k.split('.')[0] for k in result.missing_keys} <= {'fc_norm'}
    assert {k.split('.')[0] for k in result.unexpected_keys} <= {'norm'}
    return other


def expected_num_params(embed_dims: int, num_layers: int, mlp_hidden_dim: int,
                        patch_size: int, img_size: int = 224,
                        with_mask_token: bool = False) -> int:
    """Parameter count of a plain EVA ViT, counted layer by layer."""
    num_tokens = (img_size // patch_size)**2 + 1
    embeddings = (3 * patch_size**2 * embed_dims + embed_dims  # conv
                  + embed_dims  # cls token
                  + num_tokens * embed_dims  # absolute position
                  + embed_dims * with_mask_token)
    block = (
        2 * 2 * embed_dims  # norm1, norm2
        + 3 * embed_dims * embed_dims + 2 * embed_dims  # qkv, q/v bias
        + embed_dims * embed_dims + embed_dims  # proj
        + embed_dims * mlp_hidden_dim + mlp_hidden_dim  # fc1
        + mlp_hidden_dim * embed_dims + embed_dims)  # fc2
    return embeddings + num_layers * block + 2 * embed_dims


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference_attention(
        attn: EVAAttention,
        x: torch.Tensor,
        bias_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
) -> torch.Tensor:
    """Multi-head attention written out: softmax(q k^T / sqrt(d) + bias) v.

    ``q``/``k``/``v`` come from explicit slices of the fused ``qkv`` weight,
    with the key bias fixed at zero. ``bias_fn`` maps the per-head queries
    (B, heads, N, d) to an additive logit bias.
    """
    w_q, w_k, w_v = attn.qkv.weight.chunk(3)
    q = x @ w_q.T + attn.q_bias
    k = x @ w_k.T
    v = x @ w_v.T + attn.v_bias

    def split_heads(t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2)

    q, k, v = split_heads(q), split_heads(k), split_heads(v)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias_fn is not None:
        logits = logits + bias_fn(q)
    out = (logits.softmax(dim=-1) @ v).transpose(1, 2).flatten(2)
    return attn.proj(out)


def reference_decomposed_bias(q: torch.Tensor, rel_pos_h: torch.Tensor,
                              rel_pos_w: torch.Tensor, h: int, w: int,
                              num_extra_tokens: int = 0) -> torch.Tensor:
    """ViTDet's decomposed relative position term, tables built by loops.

    The logit of query (y, x) for key (k, l) gets
    ``q[y, x] . rel_pos_h[y - k + h - 1]`` plus
    ``q[y, x] . rel_pos_w[x - l + w - 1]``; extra (cls) tokens get no term.
    """
    table_h = torch.stack([
        torch.stack([rel_pos_h[y - k + h - 1] for k in range(h)])
        for y in range(h)
    ])
    table_w = torch.stack([
        torch.stack([rel_pos_w[x - l + w - 1] for l in range(w)])
        for x in range(w)
    ])
    b, heads, _, dim = q.shape
    q_grid = q[:, :, num_extra_tokens:].reshape(b, heads, h, w, dim)
    rel_h = torch.einsum('bnyxc,ykc->bnyxk', q_grid, table_h)
    rel_w = torch.einsum('bnyxc,xlc->bnyxl', q_grid, table_w)
    patch_bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(
        b, heads, h * w, h * w)
    n = num_extra_tokens + h * w
    bias = q.new_zeros(b, heads, n, n)
    bias[:, :, num_extra_tokens:, num_extra_tokens:] = patch_bias
    return bias


# ----------------------------------------------------------------------
# Construction
# ----------------------------------------------------------------------
@pytest.mark.parametrize('arch,device', [('tiny', 'cpu'), ('small', 'meta'),
                                         ('base', 'meta'), ('large', 'meta'),
                                         ('giant', 'meta')])
def test_presets_build_with_expected_sizes(arch: str, device: str) -> None:
    # The meta device builds the big presets without memory or init time.
    with torch.device(device):
        model = EVAViT(arch=arch, with_mask_token=True, out_type='featmap')
    settings = EVAViT.arch_zoo[arch]
    assert len(model.blocks) == settings['num_layers']
    assert model.patch_embed.proj.kernel_size == (settings['patch_size'], ) * 2
    assert num_params(model) == expected_num_params(
        settings['embed_dims'], settings['num_layers'],
        settings['mlp_hidden_dim'], settings['patch_size'],
        with_mask_token=True)
    if device == 'cpu':
        # A small input runs too: the 14x14 position grid is resized to 2x2.
        with torch.no_grad():
            (featmap, ) = model.eval()(torch.randn(1, 3, 32, 32))
        assert featmap.shape == (1, settings['embed_dims'], 2, 2)


def test_giant_is_the_one_billion_parameter_eva() -> None:
    with torch.device('meta'):
        model = EVAViT(arch='giant', with_mask_token=True)
    assert model.patch_embed.proj.weight.shape == (1408, 3, 14, 14)
    assert model.blocks[0].mlp.fc1.out_features == 6144
    # EVA-01 ViT-g/14: 1.01e9 parameters (paper Table 1, incl. mask token).
    assert abs(num_params(model) - 1.01e9) < 0.005e9


def test_builds_from_mmengine_root_registry_by_scoped_name() -> None:
    model = MMENGINE_MODELS.build(
        dict(type='eva_mm.EVAViT', arch=TINY, img_size=32, patch_size=8))
    assert isinstance(model, EVAViT)


def test_bad_arguments_raise() -> None:
    with pytest.raises(KeyError, match='Unknown EVAViT arch'):
        EVAViT(arch='huge')
    with pytest.raises(ValueError, match='out_type'):
        tiny_vit(out_type='tokens')
    with pytest.raises(ValueError, match='with_cls_token=False'):
        tiny_vit(window_size=2)


# ----------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------
def test_output_types_and_shapes() -> None:
    torch.manual_seed(0)
    raw_model = tiny_vit(out_type='raw').eval()
    x = torch.randn(2, 3, 32, 48)  # a 4x6 patch grid
    with torch.no_grad():
        (raw, ) = raw_model(x)
        (cls, ) = same_weights(raw_model, out_type='cls_token').eval()(x)
        (featmap, ) = same_weights(raw_model, out_type='featmap').eval()(x)
        (avg, ) = same_weights(raw_model, out_type='avg_featmap').eval()(x)
        fc_norm_model = same_weights(
            raw_model, out_type='avg_featmap', final_norm=False,
            use_fc_norm=True).eval()
        (avg_fc_norm, ) = fc_norm_model(x)
        unnormed = fc_norm_model.forward_features(x)

    assert raw.shape == (2, 1 + 4 * 6, 64)
    assert cls.shape == (2, 64)
    assert featmap.shape == (2, 64, 4, 6)
    assert avg.shape == avg_fc_norm.shape == (2, 64)
    torch.testing.assert_close(cls, raw[:, 0])
    # Patch (i, j) of the featmap is token 1 + i * W + j.
    torch.testing.assert_close(featmap[:, :, 2, 5], raw[:, 1 + 2 * 6 + 5])
    torch.testing.assert_close(featmap.flatten(2).transpose(1, 2), raw[:, 1:])
    torch.testing.assert_close(avg, raw[:, 1:].mean(dim=1))
    torch.testing.assert_close(
        avg_fc_norm,
        F.layer_norm(unnormed[:, 1:].mean(dim=1), (64, ),
                     fc_norm_model.fc_norm.weight, fc_norm_model.fc_norm.bias,
                     eps=1e-6))


def test_out_indices_return_intermediate_blocks() -> None:
    torch.manual_seed(0)
    model = tiny_vit(out_type='raw', out_indices=(0, 2, -1)).eval()
    assert model.out_indices == [0, 2, 3]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs = model(x)
        tokens, hw = model.embed(x)
        expected = []
        for block in model.blocks:
            tokens = block(tokens, positions=TokenPositions(hw))
            expected.append(tokens)
    assert len(outs) == 3
    torch.testing.assert_close(outs[0], expected[0])
    torch.testing.assert_close(outs[1], expected[2])
    # Only the last block's output goes through the final norm.
    torch.testing.assert_close(outs[2], model.norm(expected[3]))
    with pytest.raises(ValueError, match='out of range'):
        tiny_vit(out_indices=4)


def test_runtime_pos_embed_resize_for_non_square_input() -> None:
    torch.manual_seed(0)
    model = tiny_vit(out_type='raw').double().eval()  # learned for 4x4
    x = torch.randn(2, 3, 48, 64, dtype=torch.float64)  # a 6x8 grid
    with torch.no_grad():
        tokens, hw = model.embed(x)

        # By hand: conv patches, cls first, position grid resized bicubically.
        patches = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        grid = model.pos_embed[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid, size=(6, 8), mode='bicubic', align_corners=False)
        pos = torch.cat(
            [model.pos_embed[:, :1],
             grid.flatten(2).transpose(1, 2)], dim=1)
        cls = model.cls_token.expand(2, -1, -1)
        expected = torch.cat([cls, patches], dim=1) + pos
        assert hw == (6, 8)
        torch.testing.assert_close(tokens, expected)
        torch.testing.assert_close(
            pos, resize_pos_embed(model.pos_embed, (4, 4), (6, 8), 1))

        # A model built for 48x64 whose pos_embed was resized by hand
        # computes the same thing end to end.
        state = model.state_dict()
        state['pos_embed'] = pos
        native = tiny_vit(out_type='raw', img_size=(48, 64)).double().eval()
        native.load_state_dict(state)
        torch.testing.assert_close(model(x)[0], native(x)[0])

        # Loading the 4x4 checkpoint into the 48x64 model resizes on load to
        # the same embedding.
        native.load_state_dict(model.state_dict())
        torch.testing.assert_close(native.pos_embed, pos)


def test_input_not_divisible_by_patch_raises_with_fix() -> None:
    model = tiny_vit()
    with pytest.raises(ValueError) as err:
        model(torch.randn(1, 3, 33, 32))
    message = str(err.value)
    assert '33x32' in message
    assert 'patch size 8x8' in message
    assert 'pad_size_divisor=8' in message


# ----------------------------------------------------------------------
# Window attention and relative positions
# ----------------------------------------------------------------------
def test_window_and_global_block_layout() -> None:
    model = tiny_vit(
        with_cls_token=False,
        out_type='featmap',
        window_size=2,
        rel_pos='decomposed',
        global_block_indexes=(1, -1))
    assert [block.window_size for block in model.blocks] == [2, 0, 2, 0]
    head_dim = 64 // 2
    # Window blocks size their tables for the window, global ones for the
    # 4x4 grid of a 32 px input.
    for block in model.blocks:
        size = block.window_size or 4
        assert block.attn.rel_pos_h.shape == (2 * size - 1, head_dim)
        assert block.attn.rel_pos_w.shape == (2 * size - 1, head_dim)
    (featmap, ) = model(torch.randn(1, 3, 32, 40))
    assert featmap.shape == (1, 64, 4, 5)


def test_padded_window_block_matches_per_window_reference() -> None:
    torch.manual_seed(0)
    h, w, window, dim = 4, 5, 3, 32  # padded to 6x6: four 3x3 windows
    block = EVABlock(
        dim, num_heads=2, mlp_hidden_dim=64, window_size=window,
        rel_pos='decomposed', rel_pos_size=(h, w)).double().eval()
    attn = block.attn
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
        attn.rel_pos_h.normal_()
        attn.rel_pos_w.normal_()
    assert attn.rel_pos_h.shape == (2 * window - 1, dim // 2)
    x = torch.randn(2, h * w, dim, dtype=torch.float64)

    def window_bias(q: torch.Tensor) -> torch.Tensor:
        return reference_decomposed_bias(q, attn.rel_pos_h, attn.rel_pos_w,
                                         window, window)

    with torch.no_grad():
        normed = block.norm1(x).reshape(2, h, w, dim)
        padded = normed.new_zeros(2, 6, 6, dim)  # ViTDet pads with zeros
        padded[:, :h, :w] = normed
        attended = torch.empty_like(padded)
        for top in range(0, 6, window):
            for left in range(0, 6, window):
                tokens = padded[:, top:top + window, left:left + window]
                out = reference_attention(attn, tokens.reshape(2, -1, dim),
                                          window_bias)
                attended[:, top:top + window,
                         left:left + window] = out.reshape(
                             2, window, window, dim)
        expected = x + attended[:, :h, :w].reshape(2, h * w, dim)
        expected = expected + block.mlp(block.norm2(expected))
        torch.testing.assert_close(
            block(x, positions=TokenPositions((h, w))), expected)


@pytest.mark.parametrize('img_size,grid', [(1024, 64), (1280, 80),
                                           (1536, 96)])
def test_vitdet_rel_pos_tables_for_detection_inputs(img_size: int,
                                                    grid: int) -> None:
    with torch.device('meta'):
        model = EVAViT(
            arch='base',
            img_size=img_size,
            with_cls_token=False,
            out_type='featmap',
            rel_pos='decomposed',
            window_size=16,
            global_block_indexes=(2, 5, 8, 11))
    assert model.patch_resolution == (grid, grid)
    for i, block in enumerate(model.blocks):
        size = grid if i in (2, 5, 8, 11) else 16
        assert block.window_size == (0 if i in (2, 5, 8, 11) else 16)
        assert block.attn.rel_pos_h.shape == (2 * size - 1, 64)
        assert block.attn.rel_pos_w.shape == (2 * size - 1, 64)


@pytest.mark.parametrize('num_extra_tokens', [0, 1])
def test_decomposed_rel_pos_matches_einsum_reference(
        num_extra_tokens: int) -> None:
    torch.manual_seed(0)
    h, w = 3, 4
    attn = EVAAttention(
        32, num_heads=2, rel_pos='decomposed', rel_pos_size=(h, w),
        num_extra_tokens=num_extra_tokens).double().eval()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
        attn.rel_pos_h.normal_()
        attn.rel_pos_w.normal_()
        x = torch.randn(2, num_extra_tokens + h * w, 32, dtype=torch.float64)
        expected = reference_attention(
            attn, x, lambda q: reference_decomposed_bias(
                q, attn.rel_pos_h, attn.rel_pos_w, h, w, num_extra_tokens))
        without_rel_pos = reference_attention(attn, x)
        out = attn(x, positions=TokenPositions((h, w)))
    torch.testing.assert_close(out, expected)
    # The tables are not zero, so the term really changes the output.
    assert not torch.allclose(out, without_rel_pos, atol=1e-3)


def test_beit_rel_pos_bias_with_cls_matches_reference() -> None:
    torch.manual_seed(0)
    h, w, heads = 2, 3, 2
    attn = EVAAttention(
        32, num_heads=heads, rel_pos='bias', rel_pos_size=(h, w),
        num_extra_tokens=1).double().eval()
    table = attn.relative_position_bias_table
    assert table.shape == ((2 * h - 1) * (2 * w - 1) + 3, heads)
    with torch.no_grad():
        table.normal_()
    num_rel = (2 * h - 1) * (2 * w - 1)

    # Token 0 is cls; token 1 + y * w + x is patch (y, x). BEiT keeps three
    # extra rows: cls->patch, patch->cls and cls->cls.
    bias = torch.empty(heads, 1 + h * w, 1 + h * w, dtype=torch.float64)
    for i in range(1 + h * w):
        for j in range(1 + h * w):
            if i == 0 and j == 0:
                row = num_rel + 2
            elif i == 0:
                row = num_rel
            elif j == 0:
                row = num_rel + 1
            else:
                (yi, xi), (yj, xj) = divmod(i - 1, w), divmod(j - 1, w)
                row = (yi - yj + h - 1) * (2 * w - 1) + (xi - xj + w - 1)
            bias[:, i, j] = table[row]

    x = torch.randn(2, 1 + h * w, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = reference_attention(attn, x, lambda q: bias)
        torch.testing.assert_close(
            attn(x, positions=TokenPositions((h, w))), expected)


def test_beit_rel_pos_is_wired_through_the_backbone() -> None:
    model = tiny_vit(rel_pos='bias')
    for block in model.blocks:
        assert block.attn.relative_position_bias_table.shape == (7 * 7 + 3, 2)
        assert block.attn.num_extra_tokens == 1
    assert model(torch.randn(1, 3, 32, 32))[0].shape == (1, 64)


# ----------------------------------------------------------------------
# Masked image modelling
# ----------------------------------------------------------------------
def test_mask_token_replaces_exactly_the_masked_patches() -> None:
    torch.manual_seed(0)
    model = tiny_vit(with_mask_token=True).eval()
    x = torch.randn(2, 3, 32, 32)
    mask = torch.rand(2, 4, 4) < 0.4
    mask[0, 0, 0] = True
    mask[1, 3, 3] = False
    with torch.no_grad():
        plain, _ = model.embed(x)
        masked, _ = model.embed(x, mask)
        masked_flat, _ = model.embed(x, mask.flatten(1))
    patch_pos = model.pos_embed[0, 1:]
    flat_mask = mask.flatten(1)
    torch.testing.assert_close(masked[:, 0], plain[:, 0])  # cls untouched
    patches, plain_patches = masked[:, 1:], plain[:, 1:]
    expected_masked = (model.mask_token[0, 0] + patch_pos).expand(2, -1, -1)
    torch.testing.assert_close(patches[flat_mask], expected_masked[flat_mask])
    torch.testing.assert_close(patches[~flat_mask], plain_patches[~flat_mask])
    torch.testing.assert_close(masked_flat, masked)
    assert not torch.allclose(patches[flat_mask], plain_patches[flat_mask])

    with pytest.raises(ValueError, match='with_mask_token=True'):
        tiny_vit().embed(x, mask)


# ----------------------------------------------------------------------
# Freezing
# ----------------------------------------------------------------------
def _check_frozen(model: EVAViT, frozen: set) -> None:
    """Submodules and parameters named in ``frozen`` (and only those) have
    ``requires_grad=False``, get no gradient and stay in eval mode after
    ``.train()``."""

    def is_frozen(name: str) -> bool:
        return any(name == f or name.startswith(f + '.') for f in frozen)

    model.train()
    model(torch.randn(2, 3, 32, 32))[0].sum().backward()
    for name, param in model.named_parameters():
        assert param.requires_grad != is_frozen(name), name
        assert (param.grad is None) == is_frozen(name), name
    for name, module in model.named_modules():
        assert module.training != is_frozen(name), name


@pytest.mark.parametrize('frozen_stages', [0, 2])
def test_frozen_stages(frozen_stages: int) -> None:
    model = tiny_vit(frozen_stages=frozen_stages, with_mask_token=True)
    frozen = {'patch_embed', 'cls_token', 'pos_embed', 'mask_token'}
    frozen |= {f'blocks.{i}' for i in range(frozen_stages)}
    _check_frozen(model, frozen)
    assert model.blocks[frozen_stages].training
    assert model.norm.training


def test_frozen_stages_all_blocks_freezes_final_norm() -> None:
    model = tiny_vit(frozen_stages=4)
    model.train()
    assert all(not p.requires_grad for p in model.parameters())
    assert not model.norm.training and not model.blocks[3].training


def test_freeze_patch_embed_only() -> None:
    model = tiny_vit(freeze_patch_embed=True)
    _check_frozen(model, {'patch_embed'})
    assert model.cls_token.requires_grad and model.pos_embed.requires_grad


# ----------------------------------------------------------------------
# Activation checkpointing
# ----------------------------------------------------------------------
def count_saved_tensors(model: EVAViT, x: torch.Tensor) -> int:
    """Tensors autograd saves for backward outside checkpointed regions."""
    count = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return count


def test_with_cp_gives_identical_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    plain = tiny_vit(out_type='raw', out_indices=(1, 3), drop_path_rate=0.)
    checkpointed = same_weights(
        plain, out_type='raw', out_indices=(1, 3), with_cp=True)
    plain.train()
    checkpointed.train()
    x = torch.randn(2, 3, 32, 32)
    outs = plain(x)
    outs_cp = checkpointed(x)
    for out, out_cp in zip(outs, outs_cp):
        torch.testing.assert_close(out_cp, out, rtol=0, atol=0)
    sum(o.square().sum() for o in outs).backward()
    sum(o.square().sum() for o in outs_cp).backward()
    grads = dict(plain.named_parameters())
    for name, param in checkpointed.named_parameters():
        torch.testing.assert_close(
            param.grad, grads[name].grad, rtol=0, atol=0, msg=name)
    # Checkpointing really drops the block activations: autograd keeps far
    # fewer tensors for backward.
    assert count_saved_tensors(checkpointed, x) * 4 < count_saved_tensors(
        plain, x)


# ----------------------------------------------------------------------
# Layer-wise lr decay ids
# ----------------------------------------------------------------------
def test_get_layer_depth_ids() -> None:
    with torch.device('meta'):
        model = EVAViT(arch='base', with_mask_token=True,
                       rel_pos='decomposed')
    num_layers = 12 + 2
    expected = {
        'backbone.cls_token': 0,
        'backbone.pos_embed': 0,
        'backbone.mask_token': 0,
        'backbone.patch_embed.proj.weight': 0,
        'backbone.patch_embed.proj.bias': 0,
        'backbone.blocks.0.norm1.weight': 1,
        'backbone.blocks.0.attn.qkv.weight': 1,
        'backbone.blocks.4.attn.rel_pos_h': 5,
        'backbone.blocks.10.mlp.fc2.bias': 11,
        'backbone.blocks.11.attn.q_bias': 12,
        'backbone.norm.weight': 13,
        'head.fc.weight': 13,
        'neck.blocks.0.weight': 13,
    }
    for name, layer_id in expected.items():
        assert model.get_layer_depth(name, 'backbone.') == (layer_id,
                                                            num_layers), name
    # Every backbone parameter is covered, with no prefix.
    ids = {model.get_layer_depth(name)[0]
           for name, _ in model.named_parameters()}
    assert ids == set(range(num_layers))
