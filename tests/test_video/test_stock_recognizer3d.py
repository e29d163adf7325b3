"""The video EVAViT in a stock mmaction2 Recognizer3D config.

mmaction2's own VideoMAE ViT-B config, changed only by
``custom_imports=dict(imports=['eva_mm'])`` and the backbone dict, trains
one step: the stock ``ActionDataPreprocessor`` (NCTHW) and
``TimeSformerHead`` take EVAViT's pooled clip features as they are.
"""
import copy

import pytest
import torch
from mmengine.hub import get_config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope


@pytest.mark.registry_scope('mmaction')
def test_videomae_recognizer3d_config_with_eva_backbone():
    from mmaction.structures import ActionDataSample
    from mmengine.utils import import_modules_from_strings
    cfg = get_config('mmaction::recognition/videomae/'
                     'vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400.py')
    cfg.custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)
    cfg.model.backbone = dict(
        type='eva_mm.EVAViT',
        # ViT-B width, so the stock head (in_channels=768) fits; 2 blocks.
        arch=dict(embed_dims=768, num_layers=2, num_heads=12,
                  mlp_hidden_dim=768),
        img_size=64,
        num_frames=16,
        tubelet_size=2,
        out_type='avg_featmap',
        use_fc_norm=True,
        final_norm=False,
        tuple_output=False)
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    from mmaction.registry import MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()
    # Two videos, one 16-frame 64x64 clip each: (num_clips, C, T, H, W).
    torch.manual_seed(0)
    data = dict(
        inputs=[
            torch.randint(0, 256, (1, 3, 16, 64, 64), dtype=torch.uint8)
            for _ in range(2)
        ],
        data_samples=[
            ActionDataSample().set_gt_label(torch.tensor([i]))
            for i in (3, 7)
        ])
    optim_wrapper = build_optim_wrapper(
        model, dict(optimizer=dict(type='SGD', lr=0.1)))
    before = model.backbone.patch_embed.proj.weight.detach().clone()
    model.train()
    losses = model.train_step(copy.deepcopy(data), optim_wrapper)
    assert torch.isfinite(losses['loss_cls'])
    assert not torch.equal(before, model.backbone.patch_embed.proj.weight)

    model.eval()
    with torch.no_grad():
        predictions = model.test_step(copy.deepcopy(data))
    assert predictions[0].pred_score.shape == (400, )
