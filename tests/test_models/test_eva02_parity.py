"""timm ``eva02_*_patch14_224`` converted to EVAViT: the same features.

The acceptance test of EVA-02 parity (issue #15): each timm model is built
by timm with random weights (``pretrained=False``; its zero biases and unit
norms are perturbed so that a mis-routed tensor shows), converted with
``--src-format timm-eva02`` and compared on one 224 image through
``forward_features``, fp32, to 1e-5. Tiny, small and base run at full size;
large runs at full width with two blocks, and its full 24-block layout is
checked key by key on the meta device.
"""
import importlib.util
from pathlib import Path

import pytest
import timm
import torch
from mmengine.runner import load_checkpoint

from eva_mm.models import EVAViT
from eva_mm.checkpoints.converters.eva02_backbone import convert_eva02_keys

CONVERTER = (Path(__file__).resolve().parents[2] / 'tools' /
             'model_converters' / 'convert_eva.py')
TOL = 1e-5


def perturb_vectors_(model: torch.nn.Module) -> None:
    """Noise on the 1-D parameters (biases, norms, q/v biases) and tokens.

    timm initialises them to zeros and ones, under which a dropped or
    swapped bias would go unnoticed; the matrices are random already.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1 or name in ('cls_token', 'pos_embed'):
                param.add_(torch.randn_like(param) * 0.1)


def timm_eva02(size: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(f'eva02_{size}_patch14_224', pretrained=False,
                              **kwargs)
    perturb_vectors_(model)
    return model.eval()


def eva_vit_from(weights: dict, size: str, **kwargs) -> EVAViT:
    """The eva02-* EVAViT with timm's pooling (fc_norm, no final norm),
    built on the meta device and given ``weights`` strictly."""
    with torch.device('meta'):
        model = EVAViT(arch=f'eva02-{size}', out_type='raw', final_norm=False,
                       use_fc_norm=True, **kwargs)
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def assert_same_features(reference: torch.nn.Module, model: EVAViT) -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = reference.forward_features(x)
        out = model.forward_features(x)
    assert out.shape == expected.shape == (1, 257, model.embed_dims)
    diff = (out - expected).abs().max().item()
    assert diff <= TOL, diff


@pytest.mark.parametrize('size', ['small', 'base'])
def test_timm_eva02_parity(size: str) -> None:
    reference = timm_eva02(size)
    weights, dropped = convert_eva02_keys(reference.state_dict())
    assert [key for key in dropped if not key.startswith('head.')] == []
    assert_same_features(reference, eva_vit_from(weights, size))


def test_timm_eva02_tiny_parity_through_the_converter_tool(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location('convert_eva', CONVERTER)
    convert_eva = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert_eva)
    reference = timm_eva02('tiny')
    src, dst = tmp_path / 'eva02_tiny.pth', tmp_path / 'converted.pth'
    torch.save(reference.state_dict(), src)
    convert_eva.main(['--src-format', 'timm-eva02', str(src), str(dst)])
    model = EVAViT(arch='eva02-tiny', out_type='raw', final_norm=False,
                   use_fc_norm=True).eval()
    load_checkpoint(model, str(dst), strict=True)
    # Packed fc1 of timm's GluMlp: the gate is the first half.
    fc1 = reference.blocks[3].mlp.fc1.weight
    torch.testing.assert_close(model.blocks[3].mlp.fc1_g.weight, fc1[:512],
                               rtol=0, atol=0)
    torch.testing.assert_close(model.blocks[3].mlp.fc1_x.weight, fc1[512:],
                               rtol=0, atol=0)
    assert_same_features(reference, model)


def test_timm_eva02_large_parity_at_full_width() -> None:
    reference = timm_eva02('large', depth=2)
    weights, _ = convert_eva02_keys(reference.state_dict())
    with torch.device('meta'):
        model = EVAViT(arch=dict(EVAViT.arch_zoo['eva02-large'],
                                 num_layers=2),
                       out_type='raw', final_norm=False, use_fc_norm=True)
    model.load_state_dict(weights, strict=True, assign=True)
    assert_same_features(reference, model.eval())


@pytest.mark.parametrize('size', ['tiny', 'small', 'base', 'large'])
def test_full_timm_layout_converts_to_the_preset(size: str) -> None:
    """Every key and shape of the full-size timm model, on the meta device.
    """
    with torch.device('meta'):
        reference = timm.create_model(f'eva02_{size}_patch14_224',
                                      pretrained=False)
        model = EVAViT(arch=f'eva02-{size}', final_norm=False,
                       use_fc_norm=True)
    weights, _ = convert_eva02_keys(reference.state_dict())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in weights.items()} == expected
    timm_params = sum(p.numel() for name, p in reference.named_parameters()
                      if not name.startswith('head.'))
    assert sum(p.numel() for p in model.parameters()) == timm_params
