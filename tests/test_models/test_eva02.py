"""EVA-02 options of EVAViT: RoPE, SwiGLU, sub-LN, inner attention LN.

References are computed another way: the rotary tables and their use are
re-derived here from the official EVA-02 code (EVA-02/asuka/rope.py,
modeling_finetune.py's Attention, det/.../backbone/vit.py), and whole models
are compared with timm's ``Eva`` (tests/test_models/test_eva02_parity.py
does the full-size timm models).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from timm.models.eva import Eva

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.models import EVAViT
from eva_mm.checkpoints.converters.eva02_backbone import convert_eva02_keys
from eva_mm.models.layers import EVAAttention, TokenPositions

TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_hidden_dim=48)
EVA02_TINY = dict(TINY, swiglu_mlp=True, use_rot_pos_emb=True,
                  ref_feat_shape=4)


def perturb_(model: torch.nn.Module, scale: float = 0.1) -> None:
    """Noise on every parameter: zero biases and unit norms hide routing."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * scale)


# ----------------------------------------------------------------------
# The official rotary embedding, re-derived (EVA-02/asuka/rope.py:96-135)
# ----------------------------------------------------------------------
def official_rope_tables(head_dim: int, pt_seq_len: int,
                         ft_seq_len: int) -> tuple:
    """cos and sin of VisionRotaryEmbeddingFast(dim=head_dim // 2, ...).

    Per axis ``head_dim // 4`` 'lang' frequencies, each repeated twice
    (interleaved pairs); the h-axis half comes first, then the w-axis half;
    positions ``arange(ft) / ft * pt``.
    """
    dim = head_dim // 2
    freqs = 1. / (10000**(torch.arange(0, dim, 2)[:dim // 2].float() / dim))
    t = torch.arange(ft_seq_len) / ft_seq_len * pt_seq_len
    per_axis = torch.repeat_interleave(t[:, None] * freqs[None], 2, dim=-1)
    h = per_axis[:, None, :].expand(ft_seq_len, ft_seq_len, dim)
    w = per_axis[None, :, :].expand(ft_seq_len, ft_seq_len, dim)
    angles = torch.cat([h, w], dim=-1).reshape(-1, head_dim)
    return angles.cos(), angles.sin()


def official_rotate(t: torch.Tensor, cos: torch.Tensor,
                    sin: torch.Tensor) -> torch.Tensor:
    """``t * cos + rotate_half(t) * sin`` with the official pair rotation:
    (x0, x1) -> (-x1, x0)."""
    pairs = t.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return t * cos + rotated * sin


def official_attention(attn: EVAAttention, x: torch.Tensor, cos, sin,
                       extra: int) -> torch.Tensor:
    """The official Attention.forward with rope (modeling_finetune.py:
    194-246): q/k/v with the q/v biases, RoPE on tokens ``extra:``, softmax
    attention, projection."""
    b, n, c = x.shape
    q_w, k_w, v_w = attn.qkv.weight.chunk(3)
    heads = attn.num_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, n, heads, -1).permute(0, 2, 1, 3)

    q = split(F.linear(x, q_w, attn.q_bias))
    k = split(F.linear(x, k_w))
    v = split(F.linear(x, v_w, attn.v_bias))
    q = torch.cat([q[:, :, :extra], official_rotate(q[:, :, extra:], cos,
                                                      sin)], dim=2)
    k = torch.cat([k[:, :, :extra], official_rotate(k[:, :, extra:], cos,
                                                      sin)], dim=2)
    weights = (q * attn.scale @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, c)
    return attn.proj(out)


@pytest.mark.parametrize('pt, ft', [(16, 16), (16, 64), (16, 7), (4, 6)])
def test_rope_table_is_the_official_one(pt: int, ft: int) -> None:
    # ft=64 is the global grid of 1024/16 detection, 7 a window.
    model = EVAViT(arch=dict(TINY, embed_dims=128, num_heads=2),
                   use_rot_pos_emb=True, ref_feat_shape=pt)
    block = model.blocks[0]
    rope = model._rope_for(block, (ft, ft), torch.device('cpu'))
    sin, cos = rope.chunk(2, dim=-1)
    ref_cos, ref_sin = official_rope_tables(64, pt, ft)
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, ref_sin, rtol=0, atol=1e-6)


@pytest.mark.parametrize('extra', [0, 1])
def test_attention_rope_matches_official_and_skips_cls(extra: int) -> None:
    torch.manual_seed(0)
    attn = EVAAttention(64, 2, num_extra_tokens=extra).eval()
    perturb_(attn)
    hw = (5, 5)
    x = torch.randn(2, extra + 25, 64)
    model = EVAViT(arch=dict(TINY, embed_dims=64), use_rot_pos_emb=True,
                   ref_feat_shape=16)
    rope = model._rope_for(model.blocks[0], hw, x.device)
    cos, sin = official_rope_tables(32, 16, 5)
    with torch.no_grad():
        out = attn(x, positions=TokenPositions(hw, rope))
        reference = official_attention(attn, x, cos, sin, extra)
        plain = attn(x, positions=TokenPositions(hw))
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert (out - plain).abs().max() > 1e-3  # RoPE changes the output


# ----------------------------------------------------------------------
# Against timm's Eva (tiny shapes; full sizes in test_eva02_parity.py)
# ----------------------------------------------------------------------
@pytest.mark.parametrize('timm_kwargs, eva_kwargs', [
    (dict(qkv_fused=True), dict(scale_mlp=False)),
    (dict(qkv_fused=False, scale_mlp=True), dict(scale_mlp=True)),
    (dict(qkv_fused=False, scale_mlp=True, scale_attn_inner=True),
     dict(scale_mlp=True, scale_attn_inner=True)),
], ids=['packed-swiglu', 'sub-ln', 'sub-ln+inner-attn-ln'])
# 32 px is the RoPE reference grid (4x4); at 48x40 px the 6x5 grid's
# positions are scaled to it.
@pytest.mark.parametrize('img_size', [(32, 32), (48, 40)])
def test_matches_timm_eva02(timm_kwargs, eva_kwargs, img_size) -> None:
    torch.manual_seed(0)
    reference = Eva(
        img_size=img_size, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        mlp_ratio=1.5, swiglu_mlp=True, use_rot_pos_emb=True,
        ref_feat_shape=(4, 4), num_classes=0, global_pool='token',
        **timm_kwargs).eval()
    perturb_(reference)
    weights, _ = convert_eva02_keys(reference.state_dict())
    model = EVAViT(arch=dict(EVA02_TINY), img_size=img_size, patch_size=8,
                   out_type='raw', **eva_kwargs).eval()
    model.load_state_dict(weights, strict=True)
    x = torch.randn(2, 3, *img_size)
    with torch.no_grad():
        expected = reference.forward_features(x)
        out = model.forward_features(x)
    assert (out - expected).abs().max() <= 1e-5


def test_video_with_rope_raises() -> None:
    with pytest.raises(ValueError, match='use_rot_pos_emb=False'):
        EVAViT(arch='eva02-tiny', num_frames=4, tubelet_size=2)
    # Without RoPE the EVA-02 blocks serve video as EVA-01's do.
    video = EVAViT(arch=dict(EVA02_TINY, use_rot_pos_emb=False),
                   img_size=32, patch_size=8, num_frames=4, tubelet_size=2,
                   out_type='featmap')
    (out, ) = video(torch.randn(1, 3, 4, 32, 32))
    assert out.shape == (1, 32, 2, 4, 4)


# ----------------------------------------------------------------------
# Presets and options
# ----------------------------------------------------------------------
@pytest.mark.parametrize('size, dim, depth, hidden, sub_ln, params', [
    ('tiny', 192, 12, 512, False, 5.5),
    ('small', 384, 12, 1024, False, 21.6),
    ('base', 768, 12, 2048, True, 85.8),
    ('large', 1024, 24, 2730, True, 303.3),
])
def test_presets_are_the_eva02_models(size, dim, depth, hidden, sub_ln,
                                      params) -> None:
    with torch.device('meta'):
        model = EVAViT(arch=f'eva02-{size}', final_norm=False,
                       use_fc_norm=True, out_type='avg_featmap')
        detection = EVAViT(arch=f'eva02-{size}', patch_size=16,
                           img_size=1024, with_cls_token=False,
                           final_norm=False, out_type='featmap',
                           window_size=16, global_block_indexes=(2, 5))
    assert model.patch_size == 14 and detection.patch_size == 16
    assert model.use_rot_pos_emb and model.ref_feat_shape == (16, 16)
    assert len(model.blocks) == depth
    mlp = model.blocks[0].mlp
    assert mlp.fc1_g.out_features == mlp.fc1_x.out_features == hidden
    assert isinstance(mlp.norm, torch.nn.LayerNorm) == sub_ln
    assert model.blocks[0].attn.norm is None
    # Parameter counts of timm's eva02_*_patch14_224 (no head), in millions.
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(count, 1) == params
    assert not list(model.buffers())  # RoPE holds no state


def test_explicit_options_override_the_preset() -> None:
    with torch.device('meta'):
        model = EVAViT(arch='eva02-base', scale_mlp=False,
                       scale_attn_inner=True, use_rot_pos_emb=False)
        custom = EVAViT(arch=dict(EVA02_TINY, scale_mlp=True))
    assert isinstance(model.blocks[0].mlp.norm, torch.nn.Identity)
    assert isinstance(model.blocks[0].attn.norm, torch.nn.LayerNorm)
    assert not model.use_rot_pos_emb
    assert custom.use_rot_pos_emb and custom.ref_feat_shape == (4, 4)
    assert isinstance(custom.blocks[0].mlp.norm, torch.nn.LayerNorm)


# ----------------------------------------------------------------------
# RoPE on the dense (ViTDet) path and in masked image modelling
# ----------------------------------------------------------------------
def test_window_blocks_rotate_per_window_global_blocks_over_the_grid(
) -> None:
    torch.manual_seed(0)
    kwargs = dict(arch=dict(EVA02_TINY), img_size=64, patch_size=8,
                  with_cls_token=False, out_type='featmap', final_norm=False)
    windowed = EVAViT(window_size=4, global_block_indexes=(1, ), **kwargs)
    perturb_(windowed)
    block_w, block_g = windowed.blocks
    grid = (8, 8)
    device = torch.device('cpu')
    # The official rope_win (ft_seq_len=window) and rope_glb (ft=grid),
    # both scaled to pt_seq_len (det/.../backbone/vit.py:365-396).
    for block, side in ((block_w, 4), (block_g, 8)):
        sin, cos = windowed._rope_for(block, grid, device).chunk(2, dim=-1)
        torch.testing.assert_close(
            cos, official_rope_tables(16, 4, side)[0], rtol=0, atol=1e-6)

    # A window block's output on window (0, 1) is that of a global block
    # run on the window alone: its RoPE is the window's.
    x = torch.randn(1, 64, 32)
    window = x.view(1, 8, 8, 32)[:, :4, 4:].reshape(1, 16, 32)
    with torch.no_grad():
        out = block_w(x, positions=TokenPositions(
            grid, windowed._rope_for(block_w, grid, device)))
        block_w.window_size = 0
        alone = block_w(window, positions=TokenPositions(
            (4, 4), windowed._rope_for(block_w, (4, 4), device)))
    torch.testing.assert_close(
        out.view(1, 8, 8, 32)[:, :4, 4:].reshape(1, 16, 32), alone,
        rtol=1e-5, atol=1e-5)


def test_dense_model_with_padded_windows_runs() -> None:
    model = EVAViT(arch='eva02-tiny', patch_size=16, img_size=128,
                   with_cls_token=False, final_norm=False, out_type='featmap',
                   window_size=4, global_block_indexes=(2, 5, 8, 11))
    x = torch.randn(1, 3, 96, 112)  # 6x7 patches, windows padded to 8x8
    with torch.inference_mode():  # validation first: tables made here
        model(x)
    (featmap, ) = model(x)  # must still serve training
    assert featmap.shape == (1, 192, 6, 7)
    featmap.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mim_mask_tokens_get_rope_like_every_patch() -> None:
    torch.manual_seed(0)
    model = EVAViT(arch=dict(EVA02_TINY), img_size=32, patch_size=8,
                   with_mask_token=True, out_type='raw').eval()
    perturb_(model)
    x = torch.randn(1, 3, 32, 32)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 2] = mask[0, 3, 0] = True
    with torch.no_grad():
        (out, ) = model(x, mask)
        # The same with the masked embeddings replaced by hand.
        tokens, grid = model.patch_embed(x)
        tokens[mask.flatten(1)] = model.mask_token[0]
        tokens = torch.cat([model.cls_token, tokens], dim=1)
        tokens = tokens + model.pos_embed
        for block in model.blocks:
            rope = model._rope_for(block, grid, x.device)
            tokens = block(tokens, positions=TokenPositions(grid, rope))
        expected = model.norm(tokens)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


# ----------------------------------------------------------------------
# Layer-wise lr decay with the EVA-02 parameter names
# ----------------------------------------------------------------------
def test_layer_decay_covers_eva02_parameters() -> None:
    model = EVAViT(arch=dict(EVA02_TINY, scale_mlp=True),
                   scale_attn_inner=True, img_size=32, patch_size=8)
    depth = {
        name: model.get_layer_depth(name)[0]
        for name, _ in model.named_parameters()
    }
    assert depth['blocks.0.mlp.fc1_g.weight'] == 1
    assert depth['blocks.1.mlp.norm.bias'] == 2
    assert depth['blocks.1.attn.norm.weight'] == 2
    assert depth['norm.weight'] == 3 and depth['pos_embed'] == 0

    # The constructor's groups: every parameter once, at its depth's rate.
    optim = build_optim_wrapper(
        model,
        dict(optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
             constructor='eva_mm.LayerDecayOptimWrapperConstructor',
             paramwise_cfg=dict(layer_decay_rate=0.5)))
    lr = {
        name: group['lr']
        for group in optim.optimizer.param_groups
        for name in group['param_names']
    }
    assert set(lr) == set(depth)
    # num_layers = depth + 2 = 4: scale 0.5 ** (3 - layer id).
    assert math.isclose(lr['blocks.0.mlp.fc1_x.weight'], 0.5**2)
    assert math.isclose(lr['blocks.1.attn.norm.bias'], 0.5)


# ----------------------------------------------------------------------
# The official EVA-02 MIM initialisation (modeling_pretrain.py:109-154)
# ----------------------------------------------------------------------
@pytest.mark.parametrize('sub_ln', [False, True], ids=['Ti-S', 'B-L'])
def test_eva02_mim_initialisation(sub_ln: bool) -> None:
    torch.manual_seed(0)
    dim, hidden, depth = 256, 512, 4
    model = EVAViT(
        arch=dict(embed_dims=dim, num_layers=depth, num_heads=4,
                  mlp_hidden_dim=hidden, patch_size=14, swiglu_mlp=True,
                  scale_mlp=sub_ln, use_rot_pos_emb=True),
        with_mask_token=True, init_mode='eva02-mim')

    def xavier_std(fan_out: int, fan_in: int) -> float:
        return math.sqrt(2. / (fan_in + fan_out))

    def assert_std(tensor: torch.Tensor, std: float) -> None:
        assert abs(tensor.std().item() / std - 1) < 0.03, (tensor.shape,
                                                            std)

    scale = math.sqrt(math.log(2 * depth)) if sub_ln else 1.
    for block in (model.blocks[0], model.blocks[3]):  # no depth rescaling
        q, k, v = block.attn.qkv.weight.detach().chunk(3)
        # Separate (C, C) projections with sub-LN, one (3C, C) without.
        qkv_std = xavier_std(dim, dim) if sub_ln else xavier_std(3 * dim, dim)
        assert_std(q, qkv_std)
        assert_std(k, qkv_std)
        assert_std(v, qkv_std * scale)
        # Without sub-LN, xformers' packed (2H, C) w12 sets the fan-out.
        fc1_std = xavier_std(hidden if sub_ln else 2 * hidden, dim)
        assert_std(block.mlp.fc1_g.weight, fc1_std * scale)
        assert_std(block.mlp.fc1_x.weight, fc1_std * scale)
        assert_std(block.mlp.fc2.weight, xavier_std(dim, hidden) * scale)
        assert_std(block.attn.proj.weight, xavier_std(dim, dim) * scale)
        assert not block.attn.q_bias.any() and not block.mlp.fc2.bias.any()
    bound = math.sqrt(6. / (dim + 3 * 14 * 14))  # xavier-uniform kernel
    kernel = model.patch_embed.proj.weight.detach()
    assert kernel.abs().max() <= bound
    assert_std(kernel, bound / math.sqrt(3))
    for token in (model.cls_token, model.mask_token, model.pos_embed):
        assert token.abs().max() <= 0.02  # truncated at one std
    with pytest.raises(ValueError, match='init_mode'):
        EVAViT(arch=dict(EVA02_TINY), init_mode='xavier')
