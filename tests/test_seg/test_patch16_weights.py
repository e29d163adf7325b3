"""The EVA-01 MIM weights at patch 16 for the segmentation configs.

The official ``eva_psz14to16.pt`` is ``eva_psz14.pt`` with the 14 x 14
patch kernel resized to 16 x 16 and the 16 x 16 position grid resized to
14 x 14 (EVA-01/seg/interpolate_patch_14to16.py:7-28, 41-49), both bicubic;
the segmentation code resizes that grid again, to 56 x 56, when it loads the
file (EVA-01/seg/mmcv_custom/checkpoint.py:460-488). docs/segmentation.md
converts with ``--patch-size 16 --img-size 224`` and lets the config's
``init_cfg`` load it: the two steps are recomputed here from the source
tensors, and one step (``--img-size 896``) is shown to differ.
"""
import importlib.util
from pathlib import Path
from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import eva_mm  # noqa: F401  (registers eva_mm.* for the configs)
from eva_mm.models import EVAViT

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / 'configs/segmentation/'
          'eva-g-p16_vit-adapter_mask2former_60k_coco-stuff164k-896.py')
TINY = dict(embed_dims=64, num_layers=4, num_heads=4, mlp_hidden_dim=128)

pytestmark = pytest.mark.registry_scope('mmseg')


def bicubic_grid(pos_embed: torch.Tensor, size: int) -> torch.Tensor:
    """One official resize: cls kept, the square grid to size x size
    (interpolate_patch_14to16.py:20-27, mmcv_custom/checkpoint.py:475-487).
    """
    side = int((pos_embed.shape[1] - 1)**0.5)
    grid = pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(size, size), mode='bicubic',
                         align_corners=False)
    return torch.cat([pos_embed[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)],
                     dim=1)


def convert(src: Path, dst: Path, img_size: int) -> None:
    spec = importlib.util.spec_from_file_location(
        'convert_eva', ROOT / 'tools/model_converters/convert_eva.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['--src-format', 'official', str(src), str(dst),
               '--patch-size', '16', '--img-size', str(img_size)])


def loaded_by_config(checkpoint: Path) -> Dict[str, torch.Tensor]:
    """The seg config's backbone (tiny) after its Pretrained init."""
    backbone = Config.fromfile(str(CONFIG)).model.backbone
    assert (backbone.img_size, backbone.patch_size,
            backbone.with_cls_token) == (896, 16, True)
    backbone = ConfigDict(
        backbone, arch=TINY, interaction_indexes=None, deform_num_heads=4,
        conv_inplane=8, with_cp=False, norm_cfg=dict(type='BN'),
        init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    init_default_scope('mmseg')
    model = MODELS.build(backbone)
    model.init_weights()
    return model.state_dict()


def test_psz14to16_then_the_config_load_is_the_official_two_steps(
        tmp_path: Path) -> None:
    torch.manual_seed(0)
    # eva_psz14.pt: patch 14 at 224 px, a 16 x 16 grid plus cls.
    source = {
        key: torch.randn_like(value)
        for key, value in EVAViT(arch=TINY, img_size=224,
                                 patch_size=14).state_dict().items()
    }
    src = tmp_path / 'eva_psz14.pt'
    torch.save({'model': source}, src)

    convert(src, tmp_path / 'eva_psz14to16.pth', 224)
    state = loaded_by_config(tmp_path / 'eva_psz14to16.pth')
    official = bicubic_grid(bicubic_grid(source['pos_embed'], 14), 56)
    torch.testing.assert_close(state['pos_embed'], official)
    torch.testing.assert_close(
        state['patch_embed.proj.weight'],
        F.interpolate(source['patch_embed.proj.weight'], size=(16, 16),
                      mode='bicubic', align_corners=False))

    # One bicubic step 16 -> 56 gives other numbers.
    convert(src, tmp_path / 'one_step.pth', 896)
    one_step = loaded_by_config(tmp_path / 'one_step.pth')['pos_embed']
    torch.testing.assert_close(one_step,
                               bicubic_grid(source['pos_embed'], 56))
    assert (one_step - official).abs().max() > 0.05
