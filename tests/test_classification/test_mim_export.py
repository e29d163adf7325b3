"""The MIM export (tools/model_converters/export_mim.py) starts fine-tuning.

A tiny EVAMIM-style checkpoint (student backbone with mask token and final
norm, a MIM head) is exported and loaded through the backbone ``init_cfg``
of a classifier built like the IN-21K config: every backbone weight comes
from the student, the mask token, final norm and MIM head are left out,
and ``fc_norm`` starts fresh.
"""
import importlib.util
from pathlib import Path

import pytest
import torch
from mmpretrain.registry import MODELS

from eva_mm.models import EVAViT

# Builds mmpretrain models by unscoped names; the scope is dropped after.
pytestmark = pytest.mark.registry_scope('mmpretrain')

ROOT = Path(__file__).resolve().parents[2]
ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_hidden_dim=64)


@pytest.mark.registry_scope('mmpretrain')
def test_exported_mim_backbone_initialises_the_classifier(tmp_path) -> None:
    torch.manual_seed(0)
    student = EVAViT(arch=ARCH, img_size=32, patch_size=8, out_type='raw',
                     with_mask_token=True)
    with torch.no_grad():
        for param in student.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    mim_state = {f'backbone.{k}': v for k, v in student.state_dict().items()}
    mim_state['head.proj.weight'] = torch.randn(8, 32)
    torch.save(dict(state_dict=mim_state, meta=dict()), tmp_path / 'mim.pth')

    spec = importlib.util.spec_from_file_location(
        'export_mim', ROOT / 'tools/model_converters/export_mim.py')
    export_mim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_mim)
    export_mim.export(str(tmp_path / 'mim.pth'), str(tmp_path / 'eva.pth'))

    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='eva_mm.EVAViT',
                arch=ARCH,
                img_size=32,
                patch_size=8,
                out_type='avg_featmap',
                final_norm=False,
                use_fc_norm=True,
                freeze_patch_embed=True,
                init_cfg=dict(type='Pretrained',
                              checkpoint=str(tmp_path / 'eva.pth'))),
            head=dict(type='LinearClsHead', num_classes=7,
                      in_channels=32)))
    model.init_weights()

    expected = student.state_dict()
    loaded = model.backbone.state_dict()
    dropped = {'mask_token', 'norm.weight', 'norm.bias'}
    fresh = {'fc_norm.weight': torch.ones(32), 'fc_norm.bias': torch.zeros(32)}
    assert set(loaded) == (set(expected) - dropped) | set(fresh)
    for key, value in loaded.items():
        reference = fresh[key] if key in fresh else expected[key]
        torch.testing.assert_close(value, reference, rtol=0, atol=0, msg=key)
    logits = model(torch.randn(2, 3, 32, 32), mode='tensor')
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
