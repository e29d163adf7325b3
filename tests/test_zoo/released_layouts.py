"""What each released file is, from the official READMEs and model code,
and its state dict's names and shapes (meta tensors) for the model-zoo
tests.

The facts are written here from the official side, not read from the
configs, so that a metafile entry that pairs a file with the wrong config
(another size, class count, variant) fails. The layouts reuse the helpers
of the converter tests of each family (tests/test_det, test_seg,
test_models, test_video, test_clip), which write them from the official
model code; only the EVA-01 image ViT is written out here.
"""
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

TESTS = Path(__file__).resolve().parents[1]
# Test folders without __init__.py: pytest puts each on sys.path when it
# collects it; this module may be collected first.
for _folder in ('test_det', 'test_models', 'test_clip'):
    if str(TESTS / _folder) not in sys.path:
        sys.path.append(str(TESTS / _folder))

from test_eva02_converter import official_mim_layout  # noqa: E402
from test_eva02_det import RECIPES as EVA02_DET  # noqa: E402
from test_eva02_det import official_eva02_shapes  # noqa: E402
from test_official_clip import official_eva_clip  # noqa: E402
from test_official_det_converter import (  # noqa: E402
    official_shapes as eva01_det)
from test_seg.official_seg_layout import (  # noqa: E402
    beit_adapter_shapes, mask2former_head_shapes)
from test_seg.test_eva02_seg import RECIPES as EVA02_SEG  # noqa: E402
from test_seg.test_eva02_seg import official_shapes as eva02_seg  # noqa: E402
from test_video.test_video_converter import (  # noqa: E402
    official_video_layout)

Shapes = Dict[str, Tuple[int, ...]]

# width, depth, heads, MLP width (EVA-01/eva/modeling_finetune.py:766-769
# eva_g_patch14; EVA-02/asuka/modeling_finetune.py:640-745 eva02_{tiny,
# small,base,large}_patch14_*, MLP 4 * 2 / 3 of the width; Ti and S pack
# SwiGLU into w12 (xattn_fusedLN_SwiGLU), B and L have sub-LN).
ARCHS = {
    'g': (1408, 40, 16, 6144),
    'Ti': (192, 12, 3, 512),
    'S': (384, 12, 6, 1024),
    'B': (768, 12, 12, 2048),
    'L': (1024, 24, 16, 2730),
}


@dataclass(frozen=True)
class Released:
    """One official file.

    Attributes:
        arch: A key of :data:`ARCHS`.
        classes: Its classifier's class count; ``None`` for MIM and CLIP.
        patch: The patch size of its kernel (14, or 16 for _p14to16).
        grid: The side of its position grid (without the cls position).
        frames: Video frames (official-video); 0 for images.
        variant: The segmentation variant: Mask2Former decoder layers and
            rel-pos bias + layer scale (EVA-01/seg/README.md).
    """
    arch: str
    classes: Optional[int] = None
    patch: int = 14
    grid: int = 16
    frames: int = 0
    variant: Tuple[int, bool] = (8, False)


# EVA-01/eva/README.md (MIM, IN-21K 224 px, IN-1K 336/560 px),
# EVA-01/det/README.md (Objects365: 365 classes, COCO: 80, LVIS v1: 1203),
# EVA-01/seg/README.md (COCO-Stuff: 171, ADE20K: 150; the rel-pos variant
# has 9 decoder layers), EVA-01/video/README.md (K-722/400/600/700 at 8
# frames for K-722, 16 for the rest), EVA-01/clip/README.md; EVA-02/asuka/
# README.md (MIM at 224 px, _p14to16 with a 14 x 14 grid, IN-21K and IN-1K
# classifiers at 448 px), EVA-02/det/README.md, EVA-02/seg/README.md.
RELEASED: Dict[str, Released] = {
    'eva_psz14.pt': Released('g'),
    'eva_psz14to16.pt': Released('g', patch=16, grid=14),
    'eva_21k_224px_psz14.pt': Released('g', 21841),
    'eva_21k_1k_336px_psz14_ema_89p6.pt': Released('g', 1000, grid=24),
    'eva_21k_1k_560px_psz14_ema_89p7.pt': Released('g', 1000, grid=40),
    'eva_clip_psz14.pt': Released('g'),
    'eva_o365.pth': Released('g', 365),
    'eva_coco_det.pth': Released('g', 80),
    'eva_coco_seg.pth': Released('g', 80),
    'eva_lvis.pth': Released('g', 1203),
    'eva_sem_seg_mask2former_cocostuff_53p4.pth': Released('g', 171),
    'eva_sem_seg_mask2former_ade_ss61p5_ms62p3.pth': Released('g', 150),
    'eva_sem_seg_mask2former_cocostuff_relpos_layerscale_9dec_53p2.pth':
    Released('g', 171, variant=(9, True)),
    'eva_sem_seg_mask2former_ade_relpos_layerscale_9dec_ss61p5_ms62p3.pth':
    Released('g', 150, variant=(9, True)),
    'eva_video_k722.pth': Released('g', 722, frames=8),
    'eva_video_k400.pth': Released('g', 400, frames=16),
    'eva_video_k600.pth': Released('g', 600, frames=16),
    'eva_video_k700.pth': Released('g', 700, frames=16),
    'eva02_Ti_pt_in21k_p14.pt': Released('Ti'),
    'eva02_S_pt_in21k_p14.pt': Released('S'),
    'eva02_B_pt_in21k_p14.pt': Released('B'),
    'eva02_L_pt_in21k_p14.pt': Released('L'),
    'eva02_L_pt_m38m_p14.pt': Released('L'),
    'eva02_B_pt_in21k_p14to16.pt': Released('B', patch=16, grid=14),
    'eva02_L_pt_in21k_p14to16.pt': Released('L', patch=16, grid=14),
    'eva02_L_pt_m38m_p14to16.pt': Released('L', patch=16, grid=14),
    'eva02_B_pt_in21k_medft_in21k_p14.pt': Released('B', 21841, grid=32),
    'eva02_L_pt_in21k_medft_in21k_p14.pt': Released('L', 21841, grid=32),
    'eva02_L_pt_m38m_medft_in21k_p14.pt': Released('L', 21841, grid=32),
    'eva02_B_pt_in21k_ft_in1k_p14.pt': Released('B', 1000, grid=32),
    'eva02_L_pt_in21k_ft_in1k_p14.pt': Released('L', 1000, grid=32),
    'eva02_L_pt_m38m_ft_in1k_p14.pt': Released('L', 1000, grid=32),
    'eva02_B_pt_in21k_medft_in21k_ft_in1k_p14.pt': Released('B', 1000,
                                                            grid=32),
    'eva02_L_pt_in21k_medft_in21k_ft_in1k_p14.pt': Released('L', 1000,
                                                            grid=32),
    'eva02_L_pt_m38m_medft_in21k_ft_in1k_p14.pt': Released('L', 1000,
                                                           grid=32),
    'eva02_B_coco_bsl.pth': Released('B', 80),
    'eva02_L_coco_bsl.pth': Released('L', 80),
    'eva02_B_lvis_bsl.pth': Released('B', 1203),
    'eva02_L_lvis_bsl.pth': Released('L', 1203),
    'eva02_B_coco_sys.pth': Released('B', 80),
    'eva02_L_coco_sys.pth': Released('L', 80),
    'eva02_L_lvis_sys.pth': Released('L', 1203),
    'eva02_L_m38m_to_o365.pth': Released('L', 365),
    'eva02_L_in21k_to_o365.pth': Released('L', 365),
    'eva02_L_coco_det_sys_o365.pth': Released('L', 80),
    'eva02_L_coco_seg_sys_o365.pth': Released('L', 80),
    'eva02_L_lvis_sys_o365.pth': Released('L', 1203),
    'eva02_B_ade_seg_upernet_sz512.pth': Released('B', 150),
    'eva02_L_ade_seg_upernet_sz512.pth': Released('L', 150),
    'eva02_L_ade_seg_upernet_sz640.pth': Released('L', 150),
}


def eva01_vit_shapes(width: int, depth: int, mlp: int, patch: int,
                     grid: int, classes: Optional[int] = None) -> Shapes:
    """An official EVA-01 image ViT: the MIM model (EVA-01/eva/
    modeling_pretrain.py:38-72: cls and mask tokens, final norm, lm_head
    onto the 768-d CLIP-L features) or, with classes, the fine-tuned one
    (modeling_finetune.py:372-417: use_mean_pooling, so fc_norm and no
    final norm, a linear head). Its blocks (qkv without bias plus q/v
    biases, GELU MLP, no layer scale: ls=0.0) are those of the official
    video ViT, which is this ViT with a 3-D patch kernel: one frame of
    official_video_layout with a 2-D kernel."""
    video = official_video_layout(width, depth, mlp, 1, grid, classes or 1,
                                  device='meta')
    shapes = {key: tuple(value.shape) for key, value in video.items()}
    shapes['patch_embed.proj.weight'] = (width, 3, patch, patch)
    if classes is None:
        for key in ('fc_norm.weight', 'fc_norm.bias', 'head.weight',
                    'head.bias'):
            del shapes[key]
        shapes.update({
            'mask_token': (1, 1, width),
            'norm.weight': (width, ),
            'norm.bias': (width, ),
            'lm_head.weight': (768, width),
            'lm_head.bias': (768, ),
        })
    return shapes


def tiny_official_eva01() -> Dict[str, torch.Tensor]:
    """A tiny EVA-01 MIM file in the official layout (width 16, one block,
    2 x 2 patches of 14), random values, weights under 'module' as
    DeepSpeed saves them."""
    generator = torch.Generator().manual_seed(0)
    return {
        'module': {
            key: torch.randn(shape, generator=generator)
            for key, shape in eva01_vit_shapes(16, 1, 32, 14, 2).items()
        }
    }


def eva02_vit_shapes(released: Released) -> Shapes:
    """An official EVA-02 image ViT: the MIM model (official_mim_layout of
    the EVA-02 converter tests) or, with classes, the fine-tuned one
    (EVA-02/asuka/modeling_finetune.py:472-560: no mask token or lm_head,
    use_mean_pooling: fc_norm instead of the final norm, a linear head)."""
    width, depth, heads, mlp = ARCHS[released.arch]
    shapes = official_mim_layout(
        width, depth, heads, mlp, subln=released.arch in ('B', 'L'),
        patch=released.patch, grid=released.grid)
    if released.classes is not None:
        for key in ('mask_token', 'lm_head.weight', 'lm_head.bias',
                    'norm.weight', 'norm.bias'):
            del shapes[key]
        shapes.update({
            'fc_norm.weight': (width, ),
            'fc_norm.bias': (width, ),
            'head.weight': (released.classes, width),
            'head.bias': (released.classes, ),
        })
    return shapes


def official_layout(src_format: str, file_name: str,
                    config: str) -> Dict[str, torch.Tensor]:
    """The released file's state dict as meta tensors.

    Args:
        src_format: The metafile's ``--src-format``.
        file_name: The released file's name (a key of :data:`RELEASED`).
        config: The entry's config stem; the detection and segmentation
            layouts take what their converter tests keep per config (the
            official configs' window sizes, global blocks, head widths).

    Returns:
        ``{name: meta tensor}`` as the official code names and shapes them.
    """
    released = RELEASED[file_name]
    width, depth, heads, mlp = ARCHS[released.arch]
    if src_format == 'official':
        shapes = eva01_vit_shapes(width, depth, mlp, released.patch,
                                  released.grid, released.classes)
    elif src_format == 'official-eva02':
        shapes = eva02_vit_shapes(released)
    elif src_format == 'official-det':
        # EVA-01/det/projects/ViTDet/configs/COCO/cascade_mask_rcnn_vitdet_
        # eva.py: window 16, global blocks 3, 7, ..., 39; the COCO and LVIS
        # models trained at 1280 px, Objects365 at 1024 px (the configs).
        shapes = eva01_det(
            width, depth, heads, mlp, 16, tuple(range(3, 40, 4)),
            1024 if released.classes == 365 else 1280, released.classes,
            with_mask=released.classes != 365,
            fed_loss=released.classes == 1203)
    elif src_format == 'official-eva02-det':
        recipe = EVA02_DET[config]
        shapes = official_eva02_shapes(
            width, depth, heads, mlp, recipe['window'],
            recipe['global_blocks'], recipe['size'], released.classes,
            with_mask=released.classes != 365,
            fed_loss=released.classes == 1203)
    elif src_format == 'official-seg':
        # EVA-01/seg/configs/*: EVA-g at patch 16 and 896 px, ViT-Adapter
        # (conv_inplane 64, 16 deformable heads), a 1024-channel Mask2Former
        # with 200 queries (the converter test's released sizes).
        dec_layers, relpos = released.variant
        shapes = beit_adapter_shapes(
            embed_dim=width, depth=depth, num_heads=heads, mlp_hidden=mlp,
            patch_size=16, img_size=896, conv_inplane=64, deform_heads=16,
            rel_pos_bias=relpos, layer_scale=relpos)
        shapes.update(
            mask2former_head_shapes(
                in_channels=width, feat=1024, num_classes=released.classes,
                num_queries=200, enc_layers=6, enc_heads=32, enc_ffn=4096,
                dec_layers=dec_layers, dec_ffn=4096))
    elif src_format == 'official-eva02-seg':
        recipe = EVA02_SEG[config]
        # FCNHead channels=256, 1536 in the 640 px "pro" head.
        aux = 1536 if recipe['crop'] == 640 else 256
        shapes = eva02_seg(width, depth, heads, mlp, recipe['crop'],
                           recipe['channels'], aux, released.classes)
    elif src_format == 'official-video':
        return official_video_layout(width, depth, mlp, released.frames,
                                     released.grid, released.classes,
                                     device='meta')
    elif src_format == 'official-clip':
        # EVA_CLIP_g_14.json: embed 1024, text width 768, 12 layers.
        return official_eva_clip(
            width=width, depth=depth, mlp_hidden=mlp, patch=released.patch,
            img_size=released.grid * released.patch, embed_dim=1024,
            text_width=768, text_layers=12, device='meta')
    else:
        raise KeyError(f'No official layout for {src_format!r}.')
    return {
        key: torch.empty(shape, device='meta')
        for key, shape in shapes.items()
    }
