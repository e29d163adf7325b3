"""``--src-format official-eva02``: the BAAI EVA-02 MIM files and their
``_p14to16`` detection initialisations.

Synthetic checkpoints carry the names and shapes that
EVA-02/asuka/modeling_pretrain.py builds (random values): tiny/small with
fused ``qkv`` and xformers' packed SwiGLU ``w12``/``w3``; base/large with
``subln``: separate ``q_proj``/``k_proj``/``v_proj`` and the naive SwiGLU
``w1``/``w2``/``ffn_ln``/``w3``; every one with the shared RoPE module's
``freqs_cos``/``freqs_sin`` saved at the top and under each block's
attention, and the ``lm_head``. The converted model's output is compared
with timm's ``Eva`` loading the same official dict through timm's own
``checkpoint_filter_fn``.
"""
import importlib.util
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
import torch.nn.functional as F
from mmengine.runner import load_checkpoint
from timm.models.eva import Eva, checkpoint_filter_fn

from eva_mm.models import EVAViT
from eva_mm.checkpoints.errors import CheckpointError
from eva_mm.checkpoints.loading import load_backbone_checkpoint
from eva_mm.checkpoints.converters.eva02_backbone import convert_eva02_keys

CONVERTER = (Path(__file__).resolve().parents[2] / 'tools' /
             'model_converters' / 'convert_eva.py')
# A small official model: width 48 (MLP int(48 * 4 * 2 / 3) = 128), 2 heads.
DIM, DEPTH, HEADS, HIDDEN, LM_DIM = 48, 2, 2, 128, 24


@pytest.fixture(scope='module')
def convert_eva():
    spec = importlib.util.spec_from_file_location('convert_eva', CONVERTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_mim_layout(dim: int, depth: int, heads: int, hidden: int,
                        subln: bool, patch: int = 14, grid: int = 16,
                        lm_dim: int = 1024) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of VisionTransformerForMaskedImageModeling.

    modeling_pretrain.py:30-130 with rope=True, use_abs_pos_emb=True,
    qkv_bias=True; Attention/SwiGLU of modeling_finetune.py:63-190.
    """
    head_dim = dim // heads
    rope = {'freqs_cos': (grid * grid, head_dim),
            'freqs_sin': (grid * grid, head_dim)}
    shapes = {
        'cls_token': (1, 1, dim),
        'mask_token': (1, 1, dim),
        'pos_embed': (1, 1 + grid * grid, dim),
        'patch_embed.proj.weight': (dim, 3, patch, patch),
        'patch_embed.proj.bias': (dim, ),
        'norm.weight': (dim, ),
        'norm.bias': (dim, ),
        'lm_head.weight': (lm_dim, dim),
        'lm_head.bias': (lm_dim, ),
    }
    shapes.update({f'rope.{k}': v for k, v in rope.items()})
    for i in range(depth):
        block = {
            'norm1.weight': (dim, ), 'norm1.bias': (dim, ),
            'norm2.weight': (dim, ), 'norm2.bias': (dim, ),
            'attn.q_bias': (dim, ), 'attn.v_bias': (dim, ),
            'attn.proj.weight': (dim, dim), 'attn.proj.bias': (dim, ),
        }
        block.update({f'attn.rope.{k}': v for k, v in rope.items()})
        if subln:
            block.update({
                'attn.q_proj.weight': (dim, dim),
                'attn.k_proj.weight': (dim, dim),
                'attn.v_proj.weight': (dim, dim),
                'mlp.w1.weight': (hidden, dim), 'mlp.w1.bias': (hidden, ),
                'mlp.w2.weight': (hidden, dim), 'mlp.w2.bias': (hidden, ),
                'mlp.ffn_ln.weight': (hidden, ),
                'mlp.ffn_ln.bias': (hidden, ),
            })
        else:
            block.update({
                'attn.qkv.weight': (3 * dim, dim),
                'mlp.w12.weight': (2 * hidden, dim),
                'mlp.w12.bias': (2 * hidden, ),
            })
        block.update({'mlp.w3.weight': (dim, hidden), 'mlp.w3.bias': (dim, )})
        shapes.update({f'blocks.{i}.{k}': v for k, v in block.items()})
    return shapes


def random_official(subln: bool, **kwargs) -> Dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        key: torch.randn(shape) * 0.2
        for key, shape in official_mim_layout(DIM, DEPTH, HEADS, HIDDEN,
                                              subln, **kwargs).items()
    }


def eva_vit(subln: bool, **kwargs) -> EVAViT:
    arch = dict(embed_dims=DIM, num_layers=DEPTH, num_heads=HEADS,
                mlp_hidden_dim=HIDDEN, patch_size=14, swiglu_mlp=True,
                scale_mlp=subln, use_rot_pos_emb=True, ref_feat_shape=16)
    kwargs.setdefault('with_mask_token', True)
    kwargs.setdefault('out_type', 'raw')
    return EVAViT(arch=arch, **kwargs)


def expected_value(official: Dict[str, torch.Tensor],
                   key: str) -> torch.Tensor:
    """Where each EVAViT tensor comes from in the official dict."""
    block, _, name = key.partition('.attn.qkv.')
    if name:
        parts = [official.get(f'{block}.attn.{p}_proj.weight') for p in 'qkv']
        return (torch.cat(parts) if parts[0] is not None else
                official[f'{block}.attn.qkv.weight'])
    for new, old, half in (('fc1_g', 'w1', 0), ('fc1_x', 'w2', 1)):
        if f'.mlp.{new}.' in key:
            packed = key.replace(new, 'w12')
            if packed in official:
                return official[packed].chunk(2)[half]
            return official[key.replace(new, old)]
    return official[key.replace('.mlp.fc2.', '.mlp.w3.').replace(
        '.mlp.norm.', '.mlp.ffn_ln.')]


@pytest.mark.parametrize('subln', [False, True], ids=['Ti-S', 'B-L'])
def test_official_mim_converts_loads_strictly_and_matches_timm(
        tmp_path, convert_eva, capsys, subln: bool) -> None:
    official = random_official(subln)
    src, dst = tmp_path / 'eva02_pt_p14.pt', tmp_path / 'converted.pth'
    # As the official training saves it; DeepSpeed's fp16 is cast to fp32.
    torch.save({'model': {k: v.half() for k, v in official.items()}}, src)
    official = {k: v.half().float() for k, v in official.items()}
    convert_eva.main(['--src-format', 'official-eva02', str(src), str(dst)])
    report = capsys.readouterr().out
    for dropped in ('lm_head.weight', 'rope.freqs_cos',
                    'blocks.1.attn.rope.freqs_sin'):
        assert dropped in report

    model = eva_vit(subln).eval()
    load_checkpoint(model, str(dst), strict=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected_value(official, key),
                                   rtol=0, atol=0, msg=key)

    # timm's own reading of the official file, at the MIM resolution.
    reference = Eva(
        img_size=224, patch_size=14, embed_dim=DIM, depth=DEPTH,
        num_heads=HEADS, mlp_ratio=HIDDEN / DIM, qkv_fused=not subln,
        swiglu_mlp=True, scale_mlp=subln, use_rot_pos_emb=True,
        ref_feat_shape=(16, 16), num_classes=0).eval()
    reference.load_state_dict(checkpoint_filter_fn(official, reference),
                              strict=True)
    x = torch.randn(1, 3, 224, 224)
    mask = torch.rand(1, 16, 16) < 0.4
    with torch.no_grad():
        # timm moves the MIM's final norm to fc_norm; apply it here.
        expected = F.layer_norm(
            reference.forward_features(x), (DIM, ), official['norm.weight'],
            official['norm.bias'], 1e-6)
        out = model.forward_features(x)
        masked = model.forward_features(x, mask)
    assert (out - expected).abs().max() <= 1e-5
    assert (masked - out).abs().max() > 1e-2  # the mask token is wired


@pytest.mark.parametrize('size, dim, depth, heads, hidden, subln', [
    ('tiny', 192, 12, 3, 512, False),
    ('small', 384, 12, 6, 1024, False),
    ('base', 768, 12, 12, 2048, True),
    ('large', 1024, 24, 16, 2730, True),
])
def test_full_official_layout_fits_the_preset(size, dim, depth, heads,
                                              hidden, subln) -> None:
    with torch.device('meta'):
        official = {
            key: torch.empty(shape)
            for key, shape in official_mim_layout(dim, depth, heads, hidden,
                                                  subln).items()
        }
        model = EVAViT(arch=f'eva02-{size}', with_mask_token=True)
    weights, dropped = convert_eva02_keys(official)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in weights.items()} == expected
    assert set(dropped) == {
        k for k in official if k.startswith('lm_head.') or 'rope.' in k
    }


def test_p14to16_is_the_official_interpolation(tmp_path, convert_eva):
    official = random_official(subln=True)
    src, dst = tmp_path / 'eva02_pt_p14.pt', tmp_path / 'p14to16.pth'
    torch.save({'model': official}, src)
    convert_eva.main([
        '--src-format', 'official-eva02', str(src), str(dst),
        '--patch-size', '16', '--img-size', '224'
    ])
    weights = torch.load(dst, weights_only=True)['state_dict']
    # EVA-01/eva/interpolate_patch_14to16.py, which made the _p14to16 files:
    # bicubic kernel 14 -> 16, bicubic position grid 16x16 -> 14x14.
    kernel = F.interpolate(official['patch_embed.proj.weight'], size=(16, 16),
                           mode='bicubic', align_corners=False)
    grid = official['pos_embed'][:, 1:].reshape(1, 16, 16, DIM).permute(
        0, 3, 1, 2)
    grid = F.interpolate(grid, size=(14, 14), mode='bicubic',
                         align_corners=False).permute(0, 2, 3, 1).flatten(1, 2)
    torch.testing.assert_close(weights['patch_embed.proj.weight'], kernel)
    torch.testing.assert_close(
        weights['pos_embed'],
        torch.cat([official['pos_embed'][:, :1], grid], dim=1))


def test_p14to16_file_initialises_the_detection_backbone(
        tmp_path, convert_eva) -> None:
    official = random_official(subln=True, patch=16, grid=14)
    src, dst = tmp_path / 'eva02_pt_p14to16.pt', tmp_path / 'backbone.pth'
    torch.save({'model': official}, src)
    convert_eva.main(['--src-format', 'official-eva02', str(src), str(dst)])
    # The ViTDet-style backbone: no cls token, windows, RoPE per window.
    model = eva_vit(subln=True, patch_size=16, img_size=128,
                    with_mask_token=False, with_cls_token=False,
                    final_norm=False, out_type='featmap', window_size=4,
                    global_block_indexes=(1, ))
    result = load_backbone_checkpoint(model, dst)
    assert set(result.ignored) >= {'cls_token', 'mask_token', 'norm.weight'}
    torch.testing.assert_close(model.patch_embed.proj.weight,
                               official['patch_embed.proj.weight'])
    (featmap, ) = model.eval()(torch.randn(1, 3, 128, 128))
    assert featmap.shape == (1, DIM, 8, 8)


def test_bad_files_are_refused_with_the_fix(tmp_path, convert_eva) -> None:
    official = random_official(subln=True)
    incomplete = dict(official)
    del incomplete['blocks.1.attn.k_proj.weight']
    with pytest.raises(CheckpointError, match='k_proj.weight'):
        convert_eva02_keys(incomplete)
    foreign = dict(official, **{'blocks.0.attn.decoder.weight':
                                torch.zeros(2)})
    with pytest.raises(CheckpointError, match='blocks.0.attn.decoder'):
        convert_eva02_keys(foreign)

    # An EVA-01 file (GELU MLP) is pointed to the EVA-01 formats.
    eva01 = EVAViT(arch=dict(embed_dims=DIM, num_layers=DEPTH,
                             num_heads=HEADS, mlp_hidden_dim=HIDDEN))
    src, dst = tmp_path / 'eva01.pth', tmp_path / 'out.pth'
    torch.save(eva01.state_dict(), src)
    with pytest.raises(SystemExit, match="'official' or 'timm'"):
        convert_eva.main(
            ['--src-format', 'official-eva02', str(src), str(dst)])
    assert not dst.exists()
