"""A timm EVA-01 classifier converted and loaded into mmpretrain's classifier.

timm's ``Eva`` (random weights, ``global_pool='avg'``) is the reference: its
logits are computed by timm alone, then the classifier goes through
``tools/model_converters/convert_eva.py --classifier`` and mmengine's strict
``load_checkpoint`` into an ``ImageClassifier`` built from a config.
"""
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS
from timm.layers import resample_abs_pos_embed
from timm.models.eva import Eva

import eva_mm  # noqa: F401  (registers eva_mm.EVAViT)

ROOT = Path(__file__).resolve().parents[2]
ARCH = dict(embed_dims=48, num_layers=2, num_heads=3, mlp_hidden_dim=96)
NUM_CLASSES = 10


@pytest.fixture(scope='module')
def convert_eva() -> ModuleType:
    path = ROOT / 'tools/model_converters/convert_eva.py'
    spec = importlib.util.spec_from_file_location('convert_eva', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timm_classifier(img_size: int = 32) -> Eva:
    """A tiny timm EVA-01 with mean pooling + fc_norm + head, perturbed."""
    torch.manual_seed(0)
    model = Eva(
        img_size=img_size,
        patch_size=8,
        embed_dim=ARCH['embed_dims'],
        depth=ARCH['num_layers'],
        num_heads=ARCH['num_heads'],
        mlp_ratio=ARCH['mlp_hidden_dim'] / ARCH['embed_dims'],
        num_classes=NUM_CLASSES,
        global_pool='avg',
        use_rot_pos_emb=False)
    # Fresh LayerNorms are 1/0 and q/v biases 0: noise makes a dropped or
    # mis-routed tensor visible in the logits.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def mmpretrain_classifier(img_size: int = 32) -> torch.nn.Module:
    init_default_scope('mmpretrain')
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='eva_mm.EVAViT',
                arch=ARCH,
                img_size=img_size,
                patch_size=8,
                out_type='avg_featmap',
                final_norm=False,
                use_fc_norm=True),
            head=dict(
                type='LinearClsHead',
                num_classes=NUM_CLASSES,
                in_channels=ARCH['embed_dims']))).eval()


@pytest.mark.parametrize('src_format', ['timm', 'official'])
def test_converted_classifier_logits_equal_timm(tmp_path, convert_eva,
                                                src_format) -> None:
    reference = timm_classifier()
    weights = reference.state_dict()
    # The reference really is mean pooling + fc_norm + a linear head.
    assert 'fc_norm.weight' in weights and 'head.weight' in weights
    assert not any(key.startswith('norm.') for key in weights)
    src, dst = tmp_path / 'src.pth', tmp_path / 'cls.pth'
    # The official EVA-01 classifiers use the same names as timm's, wrapped
    # under 'model' (raw weights) next to 'model_ema'.
    torch.save(weights if src_format == 'timm' else dict(
        model=weights, model_ema=weights), src)
    convert_eva.main(
        ['--src-format', src_format, '--classifier', str(src), str(dst)])

    model = mmpretrain_classifier()
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    images = torch.randn(3, 3, 32, 32,
                         generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(images)
        logits = model(images, mode='tensor')
    assert logits.shape == expected.shape == (3, NUM_CLASSES)
    assert (logits - expected).abs().max() <= 1e-5


def test_backbone_checkpoint_is_refused_as_classifier(tmp_path,
                                                      convert_eva) -> None:
    weights = {k: v for k, v in timm_classifier().state_dict().items()
               if not k.startswith('head.')}
    src = tmp_path / 'backbone.pth'
    torch.save(weights, src)
    with pytest.raises(SystemExit, match='no classifier'):
        convert_eva.main(['--src-format', 'timm', '--classifier', str(src),
                          str(tmp_path / 'out.pth')])


def test_classifier_loaded_at_another_resolution(tmp_path,
                                                 convert_eva) -> None:
    """Loading a 32 px classifier into a 48 px model resizes pos_embed.

    The reference is a timm model built for 48 px whose 4x4 position grid
    is resampled to 6x6 by timm's ``resample_abs_pos_embed`` (bicubic, no
    antialias: the interpolation of the official EVA/BEiT fine-tuning code
    when it changes resolution); eva_mm resizes the grid on load.
    """
    source = timm_classifier()
    weights = source.state_dict()
    src, dst = tmp_path / 'src.pth', tmp_path / 'cls.pth'
    torch.save(weights, src)
    convert_eva.main(['--src-format', 'timm', '--classifier', str(src),
                      str(dst)])
    model = mmpretrain_classifier(img_size=48)
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    assert model.backbone.pos_embed.shape == (1, 1 + 36, ARCH['embed_dims'])

    reference = timm_classifier(img_size=48)
    weights['pos_embed'] = resample_abs_pos_embed(
        weights['pos_embed'], [6, 6], [4, 4], num_prefix_tokens=1,
        interpolation='bicubic', antialias=False)
    reference.load_state_dict(weights)
    images = torch.randn(2, 3, 48, 48,
                         generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(images)
        logits = model(images, mode='tensor')
    assert (logits - expected).abs().max() <= 1e-5
