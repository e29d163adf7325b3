"""Checkpoint reading, conversion and loading for EVAViT.

References are computed independently of eva_mm: timm's EVA forward pass,
timm's ``resample_abs_pos_embed`` for grids, and ``F.interpolate`` for
patch kernels.
"""
import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from mmengine.runner import load_checkpoint
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from timm.models.eva import Eva

from eva_mm.checkpoints.errors import CheckpointError, CheckpointMismatchError
from eva_mm.checkpoints.eva01 import convert_official_eva, convert_timm_eva
from eva_mm.checkpoints.loading import load_backbone_checkpoint
from eva_mm.checkpoints.reading import load_state_dict_file, unwrap_state_dict
from eva_mm.checkpoints.resizing import resize_checkpoint
from eva_mm.models.backbones import EVAViT

REPO = Path(__file__).resolve().parents[2]
CONVERTER = REPO / 'tools' / 'model_converters' / 'convert_eva.py'
ARCH = dict(embed_dims=64, num_layers=2, num_heads=2, mlp_hidden_dim=128)


@pytest.fixture(scope='module')
def convert_eva() -> ModuleType:
    """The converter script, imported from its path (tools is no package)."""
    spec = importlib.util.spec_from_file_location('convert_eva', CONVERTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def perturb_(model: torch.nn.Module, scale: float = 0.1) -> None:
    """Add noise to every parameter.

    Fresh models have zero biases, unit LayerNorms and zero q/v biases, so a
    dropped or mis-routed tensor would go unnoticed without it.
    """
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * scale)


def timm_eva(global_pool: str = 'token', patch_size: int = 8,
             img_size: int = 32, **kwargs) -> Eva:
    """A tiny timm EVA-01 of the ARCH shape, perturbed, in eval mode."""
    model = Eva(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=ARCH['embed_dims'],
        depth=ARCH['num_layers'],
        num_heads=ARCH['num_heads'],
        mlp_ratio=ARCH['mlp_hidden_dim'] / ARCH['embed_dims'],
        num_classes=10,
        global_pool=global_pool,
        use_rot_pos_emb=False,
        **kwargs)
    perturb_(model)
    return model.eval()


def eva_weights(**kwargs) -> Dict[str, torch.Tensor]:
    """Perturbed weights of a tiny EVAViT built with ``kwargs``."""
    model = EVAViT(arch=ARCH, **kwargs)
    perturb_(model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_equal(model: torch.nn.Module,
                       expected: Dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0,
                                   msg=key)


def grid_reference(pos_embed: torch.Tensor, src: int, dst: int,
                   num_prefix_tokens: int = 1) -> torch.Tensor:
    """timm's bicubic grid resampling (no antialias: it only upsamples)."""
    return resample_abs_pos_embed(
        pos_embed, [dst, dst], [src, src],
        num_prefix_tokens=num_prefix_tokens,
        interpolation='bicubic',
        antialias=False)


# ---------------------------------------------------------------------------
# timm equivalence (the acceptance test)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('global_pool, timm_kwargs, eva_kwargs', [
    ('token', {}, dict(out_type='cls_token')),
    ('avg', dict(use_fc_norm=True),
     dict(out_type='avg_featmap', final_norm=False, use_fc_norm=True)),
    ('token', dict(init_values=0.1),
     dict(out_type='cls_token', layer_scale_init_value=0.1)),
], ids=['token', 'avg_fc_norm', 'token_layer_scale'])
def test_timm_conversion_matches_timm_outputs(tmp_path, convert_eva,
                                              global_pool, timm_kwargs,
                                              eva_kwargs):
    torch.manual_seed(0)
    reference = timm_eva(global_pool, **timm_kwargs)
    src, dst = tmp_path / 'timm.pth', tmp_path / 'eva.pth'
    torch.save(reference.state_dict(), src)
    convert_eva.main(['--src-format', 'timm', str(src), str(dst)])

    model = EVAViT(arch=ARCH, img_size=32, patch_size=8, **eva_kwargs).eval()
    load_checkpoint(model, str(dst), strict=True)

    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference.forward_features(images)
        pooled = reference.forward_head(expected, pre_logits=True)
        features = model.forward_features(images)
        (output, ) = model(images)
    assert (features - expected).abs().max() <= 1e-5
    assert output.shape == pooled.shape == (2, ARCH['embed_dims'])
    assert (output - pooled).abs().max() <= 1e-5


def test_timm_eva02_is_rejected(tmp_path, convert_eva):
    eva02 = Eva(
        img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=2,
        qkv_fused=False, swiglu_mlp=True, scale_mlp=True,
        use_rot_pos_emb=True, ref_feat_shape=(4, 4))
    with pytest.raises(CheckpointError, match='EVA-02'):
        convert_timm_eva(eva02.state_dict())

    src = tmp_path / 'eva02.safetensors'
    save_file(eva02.state_dict(), str(src))
    with pytest.raises(SystemExit, match='EVA-02'):
        convert_eva.main(['--src-format', 'timm', str(src),
                          str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()


def test_cli_resizes(tmp_path, convert_eva, capsys):
    torch.manual_seed(0)
    reference = timm_eva(patch_size=14, img_size=28)  # a 2x2 grid
    src, dst = tmp_path / 'timm.pth', tmp_path / 'eva.pth'
    torch.save(reference.state_dict(), src)
    convert_eva.main(['--src-format', 'timm', str(src), str(dst),
                      '--patch-size', '16', '--img-size', '64'])
    summary = capsys.readouterr().out
    assert 'resized patch_embed.proj.weight: [64, 3, 14, 14] -> ' \
        '[64, 3, 16, 16]' in summary
    assert 'resized pos_embed: [1, 5, 64] -> [1, 17, 64]' in summary
    assert 'head.bias, head.weight' in summary

    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['patch_size'] == 16
    assert saved['meta']['pos_embed_grid'] == 4
    model = EVAViT(arch=ARCH, img_size=64, patch_size=16)
    load_checkpoint(model, str(dst), strict=True)
    source = reference.state_dict()
    torch.testing.assert_close(
        model.patch_embed.proj.weight,
        F.interpolate(source['patch_embed.proj.weight'], size=(16, 16),
                      mode='bicubic', align_corners=False))
    torch.testing.assert_close(model.pos_embed,
                               grid_reference(source['pos_embed'], 2, 4))
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight,
                               source['blocks.1.attn.qkv.weight'])


# ---------------------------------------------------------------------------
# Official BAAI files
# ---------------------------------------------------------------------------
def official_file(path: Path) -> Dict[str, torch.Tensor]:
    """Write a DeepSpeed-style EVA-01 MIM file; return its fp16 weights."""
    torch.manual_seed(1)
    weights = eva_weights(img_size=28, patch_size=14, with_mask_token=True)
    weights['lm_head.weight'] = torch.randn(100, ARCH['embed_dims'])
    weights['lm_head.bias'] = torch.randn(100)
    weights = {key: value.half() for key, value in weights.items()}
    torch.save({'module': weights, 'buffer_names': [], 'global_steps': 7},
               path)
    return weights


def test_official_conversion_and_loading(tmp_path, convert_eva):
    src, dst = tmp_path / 'eva_psz14.pt', tmp_path / 'eva.pth'
    weights = official_file(src)
    backbone = {
        key: value.float()
        for key, value in weights.items() if not key.startswith('lm_head.')
    }

    converted = convert_official_eva(torch.load(src, weights_only=True))
    assert set(converted) == set(backbone)
    assert all(value.dtype == torch.float32 for value in converted.values())

    convert_eva.main(['--src-format', 'official', str(src), str(dst)])
    model = EVAViT(arch=ARCH, img_size=28, patch_size=14,
                   with_mask_token=True)
    load_checkpoint(model, str(dst), strict=True)
    assert_state_equal(model, backbone)

    # Loaded without conversion into a model without mask token: the MIM
    # parts are dropped, everything else arrives.
    model = EVAViT(arch=ARCH, img_size=28, patch_size=14)
    result = load_backbone_checkpoint(model, src)
    assert result.ignored == ('lm_head.bias', 'lm_head.weight', 'mask_token')
    assert result.initialised_fresh == ()
    del backbone['mask_token']
    assert_state_equal(model, backbone)


def test_official_converter_rejects_foreign_keys():
    weights = eva_weights(img_size=32, patch_size=8)
    weights['patch_embed.projection.weight'] = weights.pop(
        'patch_embed.proj.weight')
    with pytest.raises(CheckpointError,
                       match=r"patch_embed\.projection\.weight"):
        convert_official_eva({'model': weights})


@pytest.mark.parametrize('wrap', [
    lambda sd: sd,
    lambda sd: {'state_dict': sd, 'meta': {'epoch': 3}},
    lambda sd: {'model': {f'module.{k}': v for k, v in sd.items()},
                'epoch': 3},
    lambda sd: {'model_ema': sd},
], ids=['plain', 'mmengine', 'official_ddp', 'ema'])
def test_unwrap_state_dict(wrap):
    weights = eva_weights(img_size=32, patch_size=8)
    unwrapped = unwrap_state_dict(wrap(weights))
    assert set(unwrapped) == set(weights)
    assert all(unwrapped[k] is v for k, v in weights.items())


def test_safetensors_file(tmp_path):
    weights = timm_eva().state_dict()
    save_file(weights, str(tmp_path / 'model.safetensors'))
    loaded = load_state_dict_file(tmp_path / 'model.safetensors')
    assert set(loaded) == set(weights)
    for key, value in weights.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# Resizing
# ---------------------------------------------------------------------------
def test_patch_kernel_14_to_16():
    weights = eva_weights(img_size=28, patch_size=14)
    resized = resize_checkpoint(weights, patch_size=16)
    expected = F.interpolate(weights['patch_embed.proj.weight'],
                             size=(16, 16), mode='bicubic',
                             align_corners=False)
    assert resized['patch_embed.proj.weight'].shape == (64, 3, 16, 16)
    torch.testing.assert_close(resized['patch_embed.proj.weight'], expected)
    # The grid is left alone without img_size; the input is not modified.
    assert resized['pos_embed'] is weights['pos_embed']
    assert weights['patch_embed.proj.weight'].shape == (64, 3, 14, 14)


def test_pos_embed_grid_16_to_64():
    torch.manual_seed(0)
    pos_embed = torch.randn(1, 1 + 16 * 16, 64)
    kernel = torch.randn(64, 3, 14, 14)
    resized = resize_checkpoint(
        {'pos_embed': pos_embed, 'patch_embed.proj.weight': kernel},
        patch_size=16, img_size=1024)
    assert resized['pos_embed'].shape == (1, 1 + 64 * 64, 64)
    torch.testing.assert_close(resized['pos_embed'],
                               grid_reference(pos_embed, 16, 64))
    torch.testing.assert_close(resized['pos_embed'][:, 0], pos_embed[:, 0],
                               rtol=0, atol=0)

    with pytest.raises(ValueError, match='square grid'):
        resize_checkpoint({'pos_embed': torch.randn(1, 1 + 15, 64)},
                          patch_size=16, img_size=64)


def test_model_at_other_sizes_loads_checkpoint(tmp_path):
    weights = eva_weights(img_size=28, patch_size=14)  # 2x2 grid, patch 14
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': weights}, path)
    kernel = F.interpolate(weights['patch_embed.proj.weight'], size=(16, 16),
                           mode='bicubic', align_corners=False)
    pos_embed = grid_reference(weights['pos_embed'], 2, 6)

    # Through eva_mm's loader and through mmengine (EVAViT's load pre-hook).
    for load in (lambda model: load_backbone_checkpoint(model, path),
                 lambda model: load_checkpoint(model, str(path),
                                               strict=True)):
        model = EVAViT(arch=ARCH, img_size=96, patch_size=16)  # 6x6 grid
        load(model)
        torch.testing.assert_close(model.patch_embed.proj.weight, kernel)
        torch.testing.assert_close(model.pos_embed, pos_embed)

    # A dense model without cls token drops it and its position.
    model = EVAViT(arch=ARCH, img_size=96, patch_size=16,
                   with_cls_token=False, out_type='featmap')
    result = load_backbone_checkpoint(model, path)
    assert result.ignored == ('cls_token', )
    torch.testing.assert_close(
        model.pos_embed,
        grid_reference(weights['pos_embed'][:, 1:], 2, 6,
                       num_prefix_tokens=0))


def test_task_parameters_are_initialised_fresh(tmp_path):
    weights = eva_weights(img_size=32, patch_size=8)
    path = tmp_path / 'ckpt.pth'
    torch.save(weights, path)
    model = EVAViT(arch=ARCH, img_size=32, patch_size=8, rel_pos='bias',
                   layer_scale_init_value=0.1, use_fc_norm=True,
                   with_mask_token=True)
    result = load_backbone_checkpoint(model, path)
    fresh = {'mask_token', 'fc_norm.weight', 'fc_norm.bias'}
    for i in range(ARCH['num_layers']):
        fresh |= {f'blocks.{i}.gamma_1', f'blocks.{i}.gamma_2',
                  f'blocks.{i}.attn.relative_position_bias_table'}
    assert set(result.initialised_fresh) == fresh
    assert torch.equal(model.blocks[0].gamma_1, torch.full((64, ), 0.1))
    assert not model.blocks[1].attn.relative_position_bias_table.any()
    torch.testing.assert_close(model.blocks[1].mlp.fc1.weight,
                               weights['blocks.1.mlp.fc1.weight'])


# ---------------------------------------------------------------------------
# Bad checkpoints
# ---------------------------------------------------------------------------
def test_mismatch_names_every_problem_at_once(tmp_path):
    weights = eva_weights(img_size=32, patch_size=8)
    del weights['blocks.1.mlp.fc2.weight']
    del weights['norm.bias']
    weights['blocks.0.attn.k_proj.weight'] = torch.zeros(64, 64)
    weights['decoder.weight'] = torch.zeros(3)
    weights['blocks.0.norm1.weight'] = torch.ones(32)
    weights['blocks.1.attn.qkv.weight'] = torch.ones(96, 64)
    path = tmp_path / 'bad.pth'
    torch.save(weights, path)

    model = EVAViT(arch=ARCH, img_size=32, patch_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_backbone_checkpoint(model, path)
    message = str(info.value)
    for text in ('2 missing, 2 unexpected and 2 mis-shaped',
                 'blocks.1.mlp.fc2.weight [64, 128]', 'norm.bias [64]',
                 'blocks.0.attn.k_proj.weight [64, 64]', 'decoder.weight [3]',
                 'blocks.0.norm1.weight: [32] vs [64]',
                 'blocks.1.attn.qkv.weight: [96, 64] vs [192, 64]',
                 'EVA-02', 'convert_eva.py'):
        assert text in message, text
    assert isinstance(info.value, RuntimeError)
    # Nothing was copied: no half-loaded model.
    assert_state_equal(model, before)


def test_deeper_checkpoint_gets_the_mismatch_not_a_format_question(
        tmp_path):
    """A file in EVAViT's own names (EVA-01's, which the official and timm
    formats share) for another depth: the error names what does not fit."""
    deeper = EVAViT(arch=dict(ARCH, num_layers=4), img_size=32, patch_size=8)
    path = tmp_path / 'deeper.pth'
    torch.save(deeper.state_dict(), path)
    model = EVAViT(arch=ARCH, img_size=32, patch_size=8)
    with pytest.raises(CheckpointMismatchError) as info:
        load_backbone_checkpoint(model, path)
    message = str(info.value)
    assert 'blocks.3.mlp.fc2.weight' in message
    assert 'The checkpoint has 4 blocks of width 64, the model 2' in message
    assert 'no registered checkpoint format recognises' not in message


def test_prefix(tmp_path):
    weights = eva_weights(img_size=32, patch_size=8)
    path = tmp_path / 'detector.pth'
    detector = {f'backbone.{k}': v for k, v in weights.items()}
    detector['neck.conv.weight'] = torch.zeros(4, 64, 1, 1)
    torch.save({'meta': {'epoch': 12}, 'state_dict': detector}, path)

    model = EVAViT(arch=ARCH, img_size=32, patch_size=8)
    with pytest.raises(CheckpointMismatchError, match="prefix='backbone.'"):
        load_backbone_checkpoint(model, path)
    with pytest.raises(CheckpointMismatchError,
                       match=r"prefix 'encoder\.'(.|\n)*'backbone\.': 32"):
        load_backbone_checkpoint(model, path, prefix='encoder.')

    # Through init_cfg, as the configs use it; the trailing dot is optional.
    model = EVAViT(arch=ARCH, img_size=32, patch_size=8,
                   init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                 prefix='backbone'))
    model.init_weights()
    assert_state_equal(model, weights)


def test_unreadable_files(tmp_path, convert_eva):
    missing = tmp_path / 'nowhere' / 'eva.pth'
    with pytest.raises(FileNotFoundError, match='nowhere'):
        load_state_dict_file(missing)
    with pytest.raises(FileNotFoundError, match='nowhere'):
        load_backbone_checkpoint(EVAViT(arch=ARCH, img_size=32), missing)
    with pytest.raises(SystemExit, match='nowhere'):
        convert_eva.main(['--src-format', 'official', str(missing),
                          str(tmp_path / 'out.pth')])

    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint')
    with pytest.raises(CheckpointError, match='notes.pth'):
        load_state_dict_file(text)

    optimizer_only = tmp_path / 'optimizer.pth'
    torch.save({'optimizer': {'lr': 0.1}, 'epoch': 3}, optimizer_only)
    with pytest.raises(CheckpointError, match='no state dict of tensors'):
        load_state_dict_file(optimizer_only)


class WritesFileWhenUnpickled:
    """Unpickling this object would create a file: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), 'w')


def test_pickled_objects_are_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'cls_token': torch.zeros(1, 1, 64)},
                'payload': WritesFileWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match='weights_only') as info:
        load_state_dict_file(path)
    assert 'open' in str(info.value)  # names the refused global
    assert not marker.exists()


# ---------------------------------------------------------------------------
# One resizing path
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('rel_pos', ['bias', 'decomposed'])
def test_every_way_of_loading_resizes_alike(tmp_path, convert_eva, rel_pos):
    """mmengine's load_checkpoint, init_cfg=Pretrained and the converter
    followed by a strict load give the same weights, which are the
    checkpoint's resized as computed here with timm and F.interpolate."""
    # 2x2 grid of patch 14 with rel-pos tables for it -> 6x6 of patch 16.
    weights = eva_weights(img_size=28, patch_size=14, rel_pos=rel_pos)
    src = tmp_path / 'official.pth'
    torch.save({'state_dict': weights}, src)
    expected = dict(weights)
    expected['patch_embed.proj.weight'] = F.interpolate(
        weights['patch_embed.proj.weight'], size=(16, 16), mode='bicubic',
        align_corners=False)
    expected['pos_embed'] = grid_reference(weights['pos_embed'], 2, 6)
    for i in range(ARCH['num_layers']):
        key = f'blocks.{i}.attn.'
        if rel_pos == 'bias':
            table = weights[key + 'relative_position_bias_table']
            grid = table[:-3].t().reshape(1, -1, 3, 3)
            grid = F.interpolate(grid, size=(11, 11), mode='bicubic',
                                 align_corners=False)
            expected[key + 'relative_position_bias_table'] = torch.cat(
                [grid.flatten(2)[0].t(), table[-3:]])
        else:
            for name in ('rel_pos_h', 'rel_pos_w'):
                expected[key + name] = F.interpolate(
                    weights[key + name].t()[None], size=11,
                    mode='linear')[0].t()

    def model(**kwargs) -> EVAViT:
        return EVAViT(arch=ARCH, img_size=96, patch_size=16, rel_pos=rel_pos,
                      **kwargs)

    through_mmengine = model()
    load_checkpoint(through_mmengine, str(src), strict=True)
    through_init_cfg = model(
        init_cfg=dict(type='Pretrained', checkpoint=str(src)))
    through_init_cfg.init_weights()
    dst = tmp_path / 'converted.pth'
    convert_eva.main(['--src-format', 'official', str(src), str(dst),
                      '--patch-size', '16', '--img-size', '96'])
    through_converter = model()
    through_converter.load_state_dict(
        torch.load(dst, weights_only=True)['state_dict'], strict=True)
    for loaded in (through_mmengine, through_init_cfg, through_converter):
        assert_state_equal(loaded, expected)


def test_cls_position_is_read_from_the_checkpoint_not_the_grid_shape():
    """A 4x6 grid plus a cls position has 25 = 5x5 entries: the count one
    above the model's grid says it holds a cls position (ViTDet files keep
    one without a cls token), not whether 25 is a square."""
    weights = eva_weights(img_size=(32, 48), patch_size=8)
    assert weights['pos_embed'].shape[1] == 1 + 4 * 6
    # A dense model of the same grid drops the cls position.
    dense = EVAViT(arch=ARCH, img_size=(32, 48), patch_size=8,
                   with_cls_token=False, out_type='featmap')
    without_cls_token = {k: v for k, v in weights.items() if k != 'cls_token'}
    dense.load_state_dict(without_cls_token, strict=True)
    torch.testing.assert_close(dense.pos_embed, weights['pos_embed'][:, 1:],
                               rtol=0, atol=0)


# ---------------------------------------------------------------------------
# convert_eva.py's command line: --img-size as SIZE, H W or HxW never
# swallows the positional SRC DST (the issue's ``--img-size 1024 SRC DST``
# failed with "invalid _positive_int value").
CLI_ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_hidden_dim=64)


@pytest.mark.parametrize('argv, size', [
    (['--img-size', '1024', 'SRC', 'DST'], (1024, 1024)),
    (['--img-size', '1024', '768', 'SRC', 'DST'], (1024, 768)),
    (['--img-size', '1024x768', 'SRC', 'DST'], (1024, 768)),
    (['SRC', 'DST', '--img-size', '1024', '768'], (1024, 768)),
    (['SRC', '--img-size', '896', 'DST'], (896, 896)),
    (['--img-size=1280', 'SRC', 'DST'], (1280, 1280)),
])
def test_img_size_forms(convert_eva: ModuleType, argv: list,
                        size: tuple) -> None:
    args = convert_eva.parse_args(['--src-format', 'official-det'] + argv)
    assert (args.src, args.dst, args.img_size) == ('SRC', 'DST', size)


def test_bad_img_sizes_are_refused(convert_eva: ModuleType,
                                   capsys: pytest.CaptureFixture) -> None:
    for value in ('0', '16x0', '1024x768x3', 'big'):
        with pytest.raises(SystemExit):
            convert_eva.parse_args(
                ['--src-format', 'official', '--img-size', value, 'S', 'D'])
        error = capsys.readouterr().err
        assert 'argument --img-size' in error, error
        assert ('not a positive size' in error) == (value in ('0', '16x0'))
    # Three numbers: the third is no path, so the paths are one too many.
    with pytest.raises(SystemExit):
        convert_eva.parse_args(['--src-format', 'official', '--img-size',
                                '1', '2', '3', 'S', 'D'])


def test_no_option_takes_several_tokens(convert_eva: ModuleType) -> None:
    """Any option with nargs '+', '*' or a count would swallow SRC DST."""
    parser = convert_eva.build_parser()
    for action in parser._actions:
        if action.option_strings:
            assert action.nargs in (None, 0, '?'), action.option_strings
    assert isinstance(parser, argparse.ArgumentParser)


@pytest.mark.slow
def test_conversion_with_img_size_before_the_paths(tmp_path: Path) -> None:
    src, dst = tmp_path / 'eva.pth', tmp_path / 'eva_64x48.pth'
    torch.manual_seed(0)
    source = EVAViT(arch=CLI_ARCH, img_size=32, patch_size=8)
    torch.save({'model': source.state_dict()}, src)
    proc = subprocess.run(
        [sys.executable, str(CONVERTER), '--src-format', 'official',
         '--img-size', '64', '48', str(src), str(dst)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'pos_embed: [1, 17, 32] -> [1, 49, 32]' in proc.stdout
    converted = torch.load(dst, weights_only=True)['state_dict']
    # An 8 x 6 grid of patches plus the cls position.
    assert converted['pos_embed'].shape == (1, 1 + 8 * 6, 32)
    target = EVAViT(arch=CLI_ARCH, img_size=(64, 48), patch_size=8)
    load_backbone_checkpoint(target, dst)
    assert torch.equal(target.blocks[1].mlp.fc2.weight,
                       source.blocks[1].mlp.fc2.weight)
    torch.testing.assert_close(target.pos_embed, converted['pos_embed'])
