"""EVAViT -> open_clip EVA CLIP -> EVAViT through
tools/model_converters/eva_clip.py, on the tiny EVA CLIP of conftest."""
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from tiny_eva_clip import CLIP_NAME, EMBED_DIM, EVA_ARCH, IMG_SIZE

from eva_mm.models import EVAViT, OpenCLIPTeacher
from eva_mm.checkpoints.errors import CheckpointError
from eva_mm.checkpoints.resizing import resize_checkpoint
from eva_mm.checkpoints.open_clip_convert import (eva_vit_to_open_clip,
                                                  open_clip_to_eva_vit)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] /
                       'tools' / 'model_converters'))
import eva_clip  # noqa: E402


def _backbone(tmp_path: Path, seed: int = 1, **kwargs) -> EVAViT:
    torch.manual_seed(seed)
    model = EVAViT(arch=dict(EVA_ARCH), img_size=IMG_SIZE, **kwargs).eval()
    # Non-zero biases and norms, so that a dropped or swapped one shows.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('bias') or 'norm' in name:
                param.normal_(0, 0.5)
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'eva.pth')
    return model


def _export(tmp_path: Path, config: Path, *extra: str) -> Path:
    dst = tmp_path / 'eva_clip.pth'
    eva_clip.main([
        'export',
        str(tmp_path / 'eva.pth'),
        str(dst), '--model', CLIP_NAME, '--model-config',
        str(config), *extra
    ])
    return dst


def test_export_loads_in_open_clip_with_eva_features(
        tmp_path, clip_config_file):
    eva = _backbone(tmp_path)
    dst = _export(tmp_path, clip_config_file)
    clip = open_clip.create_model(CLIP_NAME, pretrained=str(dst)).eval()

    saved = torch.load(dst, weights_only=True)['state_dict']
    weight = saved['visual.trunk.head.weight']
    bias = saved['visual.trunk.head.bias']
    assert weight.shape == (EMBED_DIM, EVA_ARCH['embed_dims'])
    images = torch.randn(3, 3, IMG_SIZE, IMG_SIZE)
    with torch.no_grad():
        expected = eva(images)[0] @ weight.t() + bias
        features = clip.encode_image(images)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
    # The export changed the tower only: the text tower is open_clip's
    # seeded initialisation.
    torch.manual_seed(0)
    fresh = open_clip.create_model(CLIP_NAME).state_dict()
    for key, value in clip.state_dict().items():
        if not key.startswith('visual.trunk.') or key.startswith(
                'visual.trunk.head.'):
            assert torch.equal(value, fresh[key]), key


def test_import_round_trips_exactly(tmp_path, clip_config_file):
    eva = _backbone(tmp_path)
    dst = _export(tmp_path, clip_config_file)
    back = tmp_path / 'eva_back.pth'
    eva_clip.main(['import', str(dst), str(back)])

    imported = torch.load(back, weights_only=True)['state_dict']
    clip_state = torch.load(dst, weights_only=True)['state_dict']
    original = eva.state_dict()
    assert set(imported) == set(original) | {'head.weight', 'head.bias'}
    for key, value in original.items():
        assert torch.equal(imported[key], value), key
    assert torch.equal(imported['head.weight'],
                       clip_state['visual.trunk.head.weight'])

    # Exporting the import again with its projection gives the checkpoint.
    backbone, projection = open_clip_to_eva_vit(clip_state)
    again = eva_vit_to_open_clip(backbone, clip_state, projection)
    assert set(again) == set(clip_state)
    assert all(torch.equal(again[k], clip_state[k]) for k in clip_state)

    # The imported tower serves EVAViT configs through init_cfg.
    model = EVAViT(
        arch=dict(EVA_ARCH),
        img_size=IMG_SIZE,
        init_cfg=dict(type='Pretrained', checkpoint=str(back))).eval()
    model.init_weights()
    images = torch.randn(2, 3, IMG_SIZE, IMG_SIZE)
    with torch.no_grad():
        assert torch.equal(model(images)[0], eva(images)[0])


def test_export_of_a_mim_student_and_other_grid(tmp_path, clip_config_file):
    # A MIM export with --keep-mask-token, trained at 48 px (grid 6).
    eva = _backbone(tmp_path, with_mask_token=True)
    big = EVAViT(arch=dict(EVA_ARCH), img_size=48, with_mask_token=True)
    big.load_state_dict(eva.state_dict(), strict=False)
    state = {f'backbone.{k}': v for k, v in big.state_dict().items()}
    torch.save(dict(state_dict=state), tmp_path / 'eva.pth')
    dst = _export(tmp_path, clip_config_file, '--prefix', 'backbone.')

    exported = torch.load(dst, weights_only=True)['state_dict']
    assert 'visual.trunk.mask_token' not in exported
    expected = resize_checkpoint(
        big.state_dict(), img_size=IMG_SIZE)['pos_embed']
    torch.testing.assert_close(
        exported['visual.trunk.pos_embed'], expected, rtol=0, atol=0)
    open_clip.create_model(CLIP_NAME, pretrained=str(dst))


def test_export_refuses_what_does_not_fit(tmp_path, clip_config_file):
    clip_state = open_clip.create_model(CLIP_NAME).state_dict()
    pooled = EVAViT(
        arch=dict(EVA_ARCH), img_size=IMG_SIZE, out_type='avg_featmap',
        final_norm=False, use_fc_norm=True)
    with pytest.raises(CheckpointError, match='fc_norm'):
        eva_vit_to_open_clip(pooled.state_dict(), clip_state)
    wide = EVAViT(arch=dict(EVA_ARCH, embed_dims=64, num_heads=4),
                  img_size=IMG_SIZE)
    with pytest.raises(CheckpointError, match='mis-shaped.*cls_token'):
        eva_vit_to_open_clip(wide.state_dict(), clip_state)
    plain = open_clip.CLIP(
        embed_dim=EMBED_DIM,
        vision_cfg=dict(image_size=IMG_SIZE, patch_size=8, width=32,
                        layers=1, head_width=16),
        text_cfg=dict(width=32, heads=2, layers=1)).state_dict()
    with pytest.raises(CheckpointError, match='VisionTransformer'):
        open_clip_to_eva_vit(plain)


def test_export_takes_the_text_tower_of_another_clip(
        tmp_path, clip_config_file):
    _backbone(tmp_path)
    # A CLIP (top-level text names) whose embedding width differs, as
    # OpenAI CLIP-L's 768 from EVA01-g-14's 1024.
    torch.manual_seed(5)
    text_clip = open_clip.CLIP(
        embed_dim=EMBED_DIM // 2,
        vision_cfg=dict(image_size=IMG_SIZE, patch_size=8, width=32,
                        layers=1, head_width=16),
        text_cfg=dict(width=32, heads=2, layers=1))
    source = text_clip.state_dict()
    torch.save(source, tmp_path / 'text.pth')
    dst = _export(tmp_path, clip_config_file, '--text-checkpoint',
                  str(tmp_path / 'text.pth'))

    checkpoint = torch.load(dst, weights_only=True)
    exported = checkpoint['state_dict']
    assert checkpoint['meta']['text_kept'] == ['text.text_projection']
    for key in ('token_embedding.weight', 'positional_embedding',
                'transformer.resblocks.0.attn.in_proj_weight',
                'ln_final.bias'):
        assert torch.equal(exported[f'text.{key}'], source[key]), key
    # What does not fit keeps open_clip's seeded initialisation.
    torch.manual_seed(0)
    fresh = open_clip.create_model(CLIP_NAME).state_dict()
    for key in ('text.text_projection', 'logit_scale'):
        assert torch.equal(exported[key], fresh[key]), key
    open_clip.create_model(CLIP_NAME, pretrained=str(dst))


def test_imported_tower_is_a_mim_teacher(tmp_path, clip_config_file):
    eva = _backbone(tmp_path)
    dst = _export(tmp_path, clip_config_file)
    teacher_file = tmp_path / 'teacher.pth'
    eva_clip.main([
        'import', str(dst), str(tmp_path / 'eva_back.pth'), '--teacher',
        str(teacher_file), '--num-heads', str(EVA_ARCH['num_heads'])
    ])
    saved = torch.load(teacher_file, weights_only=True)
    teacher = OpenCLIPTeacher(
        model_cfg=saved['meta']['model_cfg'], pretrained=str(teacher_file))

    clip = open_clip.create_model(CLIP_NAME, pretrained=str(dst)).eval()
    head = clip.visual.trunk.head
    images = torch.randn(2, 3, IMG_SIZE, IMG_SIZE)
    with torch.no_grad():
        # EVA's normed patch tokens through the projection, bias included.
        tokens = EVAViT(arch=dict(EVA_ARCH), img_size=IMG_SIZE,
                        out_type='raw')
        tokens.load_state_dict(eva.state_dict())
        expected = head(tokens.eval()(images)[0][:, 1:])
        targets = teacher(images)
        # The pooled output of the rewritten tower is EVA CLIP's feature.
        pooled = teacher.visual(images)
        features = clip.encode_image(images)
    torch.testing.assert_close(targets, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, features, rtol=0, atol=1e-5)
    assert teacher.out_channels == EMBED_DIM
    # The EVA CLIP itself, its timm tower as it is, gives the same targets.
    direct = OpenCLIPTeacher(CLIP_NAME, pretrained=str(dst))
    torch.testing.assert_close(direct(images), expected, rtol=0, atol=1e-5)
    assert direct.out_channels == EMBED_DIM


def test_eva_g_fits_open_clip_eva01_g_14():
    # Shapes only: both giants are built on the meta device.
    with torch.device('meta'):
        clip_state = open_clip.create_model(
            'EVA01-g-14', device='meta').state_dict()
        eva = EVAViT(arch='giant', img_size=224).state_dict()
    exported = eva_vit_to_open_clip(eva, clip_state)
    assert set(exported) == set(clip_state)
    for key, value in eva.items():
        assert exported[f'visual.trunk.{key}'].shape == value.shape, key
    assert clip_state['visual.trunk.head.weight'].shape == (1024, 1408)
    backbone, projection = open_clip_to_eva_vit(exported)
    assert {k: v.shape for k, v in backbone.items()} == {
        k: v.shape for k, v in eva.items()}
