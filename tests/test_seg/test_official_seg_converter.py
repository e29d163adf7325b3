"""``convert_eva.py --src-format official-seg`` on synthetic checkpoints in
the layout of the released EVA-01 segmentation models.

The source files are written from the official model code's names and
shapes (``official_seg_layout.py``) with random values, at tiny sizes given
to the configs as ``--cfg-options`` would; they convert, load strictly into
the plain and the rel-pos / layer-scale / 9-decoder-layer configs of
ADE20K and COCO-Stuff, and every tensor lands unchanged under the name the
issue's mapping gives. At full size the key/shape layout is compared with
the paper configs' models on the meta device.
"""
import importlib.util
import re
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import eva_mm  # noqa: F401  (registers eva_mm.* for the configs)
from eva_mm.checkpoints.errors import CheckpointError
from eva_mm.checkpoints.converters import SRC_FORMATS, check_fits_config
from eva_mm.datasets.synthetic import generate_demo_ade
from test_seg.official_seg_layout import (beit_adapter_shapes,
                                                mask2former_head_shapes,
                                                random_state_dict)
from test_seg.test_seg_configs import shrink_options

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / 'configs/segmentation'
# The converter script, imported from its path (tools is no package).
_spec = importlib.util.spec_from_file_location(
    'convert_eva', REPO / 'tools/model_converters/convert_eva.py')
convert_eva = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_eva)
PLAIN_COCO = 'eva-g-p16_vit-adapter_mask2former_60k_coco-stuff164k-896'
PLAIN_ADE = 'eva-g-p16_vit-adapter_mask2former_coco-stuff-pre_20k_ade20k-896'
RELPOS_COCO = ('eva-g-p16_vit-adapter-relpos-ls_mask2former-9dec_80k_'
               'coco-stuff164k-896')
RELPOS_ADE = ('eva-g-p16_vit-adapter-relpos-ls_mask2former-9dec_'
              'coco-stuff-pre_40k_ade20k-896')
# config: (classes, decoder layers, rel-pos bias and layer scale)
VARIANTS = {
    PLAIN_COCO: (171, 8, False),
    PLAIN_ADE: (150, 8, False),
    RELPOS_COCO: (171, 9, True),
    RELPOS_ADE: (150, 9, True),
}


pytestmark = pytest.mark.registry_scope('mmseg')


def official_name(key: str) -> str:
    """The issue's mapping, backwards: eva_mm name -> official name."""
    key = re.sub(r'(pixel_decoder\.encoder\.layers\.\d+\.)self_attn\.',
                 r'\1attentions.0.', key)
    key = re.sub(r'(pixel_decoder\.encoder\.layers\.\d+\.)ffn\.',
                 r'\1ffns.0.', key)
    key = re.sub(r'(transformer_decoder\.layers\.\d+\.)cross_attn\.',
                 r'\1attentions.0.', key)
    key = re.sub(r'(transformer_decoder\.layers\.\d+\.)self_attn\.',
                 r'\1attentions.1.', key)
    return re.sub(r'(transformer_decoder\.layers\.\d+\.)ffn\.', r'\1ffns.0.',
                  key)


def tiny_config(name: str, tmp_path: Path) -> Tuple[Config, str]:
    """The config shrunk as tests/test_seg/test_seg_configs.py runs it
    (tiny ViT: 12 blocks of width 192, patch 8, 64 px; 32-channel head),
    keeping the config's number of decoder layers; also dumped to a file
    for ``convert_eva.py --config``."""
    cfg = Config.fromfile(str(CONFIG_DIR / f'{name}.py'))
    options = shrink_options(cfg, tmp_path)
    del options['model.decode_head.transformer_decoder.num_layers']
    options['model.backbone.norm_cfg'] = dict(type='BN')
    cfg.merge_from_dict(options)
    path = str(tmp_path / f'{name}_tiny.py')
    cfg.dump(path)
    return cfg, path


def tiny_official(classes: int, dec_layers: int, relpos: bool,
                  seed: int = 0) -> Dict[str, torch.Tensor]:
    """An official-layout checkpoint of the tiny model's sizes."""
    shapes = beit_adapter_shapes(
        embed_dim=192, depth=12, num_heads=3, mlp_hidden=768, patch_size=8,
        img_size=64, conv_inplane=16, deform_heads=4, rel_pos_bias=relpos,
        layer_scale=relpos)
    shapes.update(
        mask2former_head_shapes(
            in_channels=192, feat=32, num_classes=classes, num_queries=16,
            enc_layers=1, enc_heads=4, enc_ffn=64, dec_layers=dec_layers,
            dec_ffn=64))
    return random_state_dict(shapes, seed)


def convert_file(src: Path, dst: Path, config: str = None) -> None:
    argv = ['--src-format', 'official-seg', str(src), str(dst)]
    convert_eva.main(argv + (['--config', config] if config else []))


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_converts_and_loads_strictly(name: str, tmp_path: Path) -> None:
    classes, dec_layers, relpos = VARIANTS[name]
    cfg, cfg_file = tiny_config(name, tmp_path)
    source = tiny_official(classes, dec_layers, relpos)
    # As released: mmengine-style {'meta', 'state_dict'}.
    src = tmp_path / 'official.pth'
    torch.save({'meta': {'iter': 20000}, 'state_dict': source}, src)
    dst = tmp_path / 'converted.pth'
    # --config: nothing is written unless the result fits the model.
    convert_file(src, dst, cfg_file)
    converted = torch.load(dst, weights_only=True)
    weights = converted['state_dict']
    assert converted['meta']['src_format'] == 'official-seg'
    assert converted['meta']['num_decoder_layers'] == dec_layers
    assert converted['meta']['rel_pos_bias'] is relpos

    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    model.load_state_dict(weights, strict=True)
    state = model.state_dict()
    assert set(state) == set(weights)
    index_buffers = {k for k in source if k.endswith('position_index')}
    assert bool(index_buffers) is relpos
    # Every source tensor but the derived index buffers lands unchanged.
    assert {official_name(k) for k in state} == set(source) - index_buffers
    for key, value in state.items():
        assert torch.equal(value, source[official_name(key)]), key
    if relpos:
        block = model.backbone.blocks[0]
        assert block.gamma_1 is not None and torch.equal(
            block.gamma_1.data, source['backbone.blocks.0.gamma_1'])
        assert len(model.decode_head.transformer_decoder.layers) == 9


def test_loaded_model_runs(tmp_path: Path) -> None:
    """The converted rel-pos model predicts (the tensors are wired where
    the forward uses them, not only named alike)."""
    cfg, _ = tiny_config(RELPOS_ADE, tmp_path)
    weights = SRC_FORMATS['official-seg'].convert(
        tiny_official(150, 9, True), None).state_dict
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model).eval()
    model.load_state_dict(weights, strict=True)
    with torch.no_grad():
        logits = model.encode_decode(torch.randn(1, 3, 64, 64),
                                     [dict(img_shape=(64, 64))])
    assert logits.shape == (1, 150, 64, 64)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize('name', [PLAIN_ADE, RELPOS_COCO])
def test_full_size_layout_matches_paper_config(name: str) -> None:
    """The official layout at the released sizes (EVA-g, 1024-channel
    head, 200 queries) fits the paper config's model key for key."""
    classes, dec_layers, relpos = VARIANTS[name]
    shapes = beit_adapter_shapes(
        embed_dim=1408, depth=40, num_heads=16, mlp_hidden=6144,
        patch_size=16, img_size=896, conv_inplane=64, deform_heads=16,
        rel_pos_bias=relpos, layer_scale=relpos)
    shapes.update(
        mask2former_head_shapes(
            in_channels=1408, feat=1024, num_classes=classes,
            num_queries=200, enc_layers=6, enc_heads=32, enc_ffn=4096,
            dec_layers=dec_layers, dec_ffn=4096))
    source = {
        key: torch.empty(shape, device='meta')
        for key, shape in shapes.items()
    }
    conversion = SRC_FORMATS['official-seg'].convert(source, None)
    check_fits_config(conversion.state_dict, str(CONFIG_DIR / f'{name}.py'))
    assert conversion.meta['embed_dims'] == 1408
    assert conversion.meta['num_layers'] == 40
    assert len(conversion.dropped) == (40 if relpos else 0)


def test_plain_checkpoint_does_not_fit_relpos_config(tmp_path: Path) -> None:
    """A plain (8-layer, no rel-pos) file checked against the rel-pos
    config: refused with the keys, nothing written."""
    _, cfg_file = tiny_config(RELPOS_ADE, tmp_path)
    src = tmp_path / 'plain.pth'
    torch.save(tiny_official(150, 8, False), src)
    dst = tmp_path / 'out.pth'
    with pytest.raises(SystemExit, match='relative_position_bias_table'):
        convert_file(src, dst, cfg_file)
    assert not dst.exists()


def test_wrong_kinds_get_one_clear_error(tmp_path: Path) -> None:
    official = tiny_official(150, 8, False)
    bare_vit = {
        key[len('backbone.'):]: value
        for key, value in official.items()
        if key.startswith('backbone.blocks.') or key.startswith(
            'backbone.patch_embed')
    }
    converted = SRC_FORMATS['official-seg'].convert(official,
                                                    None).state_dict
    detector = {
        'backbone.net.blocks.0.norm1.weight': torch.zeros(4),
        'roi_heads.box_predictor.0.cls_score.weight': torch.zeros(2, 4),
    }
    cases = [
        (bare_vit, '--src-format official'),
        (converted, 'needs no conversion'),
        (detector, 'not an EVA-01 ViT-Adapter'),
        (dict(official, **{'auxiliary_head.conv.weight': torch.zeros(1)}),
         'auxiliary_head.conv.weight'),
        (dict(official, **{
            'decode_head.transformer_decoder.layers.0.attentions.2.attn.'
            'in_proj_weight': torch.zeros(1)
        }), 'not an EVA-01 segmentation checkpoint'),
    ]
    for i, (state, message) in enumerate(cases):
        src = tmp_path / f'case{i}.pth'
        dst = tmp_path / f'case{i}_out.pth'
        torch.save(state, src)
        with pytest.raises(SystemExit) as err:
            convert_file(src, dst)
        assert message in str(err.value), str(err.value)
        assert str(err.value).count('error:') == 1
        assert not dst.exists()
    with pytest.raises(CheckpointError):
        SRC_FORMATS['official-seg'].convert(bare_vit, None)


@pytest.mark.slow
def test_tools_test_evaluates_an_official_file_as_it_is(
        tmp_path: Path) -> None:
    """An official file given to tools/test.py as it is: recognised as
    ``official-seg``, converted in memory, loaded strictly and evaluated,
    with the mIoU of the same file converted on disk first."""
    import subprocess
    import sys
    cfg, _ = tiny_config(PLAIN_ADE, tmp_path)
    generate_demo_ade(str(tmp_path), num_train=1, num_val=2, num_classes=8)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg_file = str(tmp_path / 'tiny_test.py')
    cfg.dump(cfg_file)
    official = tmp_path / 'official.pth'
    torch.save({'state_dict': tiny_official(150, 8, False)}, official)
    converted = tmp_path / 'converted.pth'
    convert_file(official, converted, cfg_file)

    def evaluate(checkpoint: Path, work_dir: str) -> Tuple[float, str]:
        proc = subprocess.run(
            [sys.executable, str(REPO / 'tools/test.py'), cfg_file,
             str(checkpoint), '--work-dir', str(tmp_path / work_dir)],
            cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        miou = re.findall(r'mIoU: ([0-9.]+)', proc.stdout)
        assert miou, proc.stdout[-3000:]
        return float(miou[-1]), proc.stdout

    miou, log = evaluate(official, 'official')
    assert 'official-seg' in log
    assert miou == evaluate(converted, 'converted')[0]
