"""The metafiles, eva_mm.checkpoints.zoo and tools/model_zoo.py.

Every metafile entry is checked against its config: the config exists and
builds at full size on the meta device, the ``--src-format`` is one of
convert_eva.py, and the released file's official layout (written from the
official code, tests/test_zoo/released_layouts.py) converts into exactly
the keys and shapes of the config's model (``Load: model``) or of its
backbone's blocks and patch embedding (``Load: backbone``).
"""
import functools
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

import eva_mm  # noqa: F401  (registers eva_mm.* for the configs)
from eva_mm.checkpoints.zoo import (MODEL_INDEX, ModelInfo, ModelZooError,
                                    get_model_info, list_models,
                                    load_model_index)
from file_server import FileServer
from released_layouts import RELEASED, official_layout, tiny_official_eva01

ROOT = Path(__file__).resolve().parents[2]
MODELS_BY_NAME = load_model_index()


def load_tool(path: Path) -> ModuleType:
    """A script of tools/ imported from its file (tools/ is no package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model_zoo = load_tool(ROOT / 'tools/model_zoo.py')
convert_eva = load_tool(ROOT / 'tools/model_converters/convert_eva.py')


def shapes(state_dict: Dict[str, torch.Tensor]) -> Dict[str, Tuple]:
    return {key: tuple(value.shape) for key, value in state_dict.items()}


@functools.lru_cache(maxsize=None)
def build_entry_model(config: str) -> torch.nn.Module:
    """The config's model at full size on the meta device, in the config's
    default scope, as the toolbox's runner builds it."""
    cfg = Config.fromfile(str(ROOT / config))
    model_cfg = cfg.model.copy()
    # Downloads and random draws that meta tensors cannot take and that
    # hold no weights of the released files: the MIM teacher's pretrained
    # CLIP and mmaction2's Mixup/CutMix sampler.
    if 'target_generator' in model_cfg:
        model_cfg.target_generator.pretrained = None
    preprocessor = model_cfg.get('data_preprocessor')
    if isinstance(preprocessor, dict):
        preprocessor.pop('blending', None)
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmengine')), torch.device('meta'):
        if model_cfg.type == 'eva_mm.OpenCLIPZeroShot':
            # open_clip moves the model it builds to the CPU, which meta
            # tensors cannot do: build its open_clip model on meta instead;
            # OpenCLIPZeroShot loads open_clip's keys under 'clip.'.
            import open_clip
            return open_clip.create_model(model_cfg.model_name,
                                          device='meta')
        return MODELS.build(model_cfg)


def num_classes(model: torch.nn.Module) -> int:
    """The class count of a detector, segmentor, classifier or recognizer.
    """
    if hasattr(model, 'roi_head'):
        return model.roi_head.bbox_head[0].num_classes
    if hasattr(model, 'decode_head'):
        return model.decode_head.num_classes
    if hasattr(model, 'cls_head'):
        return model.cls_head.num_classes
    return model.head.num_classes


def test_model_index_imports_every_metafile() -> None:
    import yaml
    index = yaml.safe_load(MODEL_INDEX.read_text())
    assert sorted(index['Import']) == sorted(
        str(p.relative_to(ROOT)) for p in ROOT.glob('configs/*/metafile.yml'))
    # Every released file the official READMEs list for a config here.
    files = {info.file_name for info in MODELS_BY_NAME.values()}
    assert files == set(RELEASED)
    assert len(MODELS_BY_NAME) == 55


@pytest.mark.parametrize('name', sorted(MODELS_BY_NAME))
def test_entry_fits_its_config(name: str) -> None:
    info = MODELS_BY_NAME[name]
    assert info.config_path.is_file(), info.config
    assert info.weights.startswith(
        ('https://huggingface.co/BAAI/EVA/resolve/main/',
         'https://huggingface.co/Yuxin-CV/EVA-02/resolve/main/eva02/'))
    parser = convert_eva.build_parser()
    src_format = next(action for action in parser._actions
                      if action.dest == 'src_format')
    assert info.src_format in src_format.choices
    # The extra options parse (after the paths, as model_zoo.py passes
    # them).
    convert_eva.parse_args(['--src-format', info.src_format, 'a', 'b',
                            *info.converter_args])

    model = build_entry_model(info.config)
    released = RELEASED[info.file_name]
    width, depth = {'g': (1408, 40), 'Ti': (192, 12), 'S': (384, 12),
                    'B': (768, 12), 'L': (1024, 24)}[released.arch]
    state = model.state_dict()
    assert all(value.is_meta for value in state.values())
    if info.src_format == 'official-clip':
        trunk = 'visual.trunk.'
        assert state[trunk + 'patch_embed.proj.weight'].shape[0] == width
        assert f'{trunk}blocks.{depth - 1}.norm1.weight' in state
        assert f'{trunk}blocks.{depth}.norm1.weight' not in state
    else:
        assert (model.backbone.embed_dims,
                len(model.backbone.blocks)) == (width, depth)
        if released.classes is not None:
            assert num_classes(model) == released.classes

    source = official_layout(info.src_format, info.file_name,
                             Path(info.config).stem)
    args = convert_eva.parse_args([
        '--src-format', info.src_format, 'src', 'dst', *info.converter_args,
        *(['--config', str(info.config_path)] if info.load == 'model' else [])
    ])
    converted = convert_eva.SRC_FORMATS[info.src_format].convert(
        source, args).state_dict
    if info.load == 'model':
        assert shapes(converted) == shapes(state)
    else:
        # Backbone weights: the blocks and the patch kernel as the model
        # has them (the position grid and the MIM-only tokens follow the
        # loader, which resizes and drops them).
        body = shapes(model.backbone.state_dict())
        body = {k: v for k, v in body.items()
                if k.startswith('blocks.') or k.startswith('patch_embed.')}
        assert {k: v for k, v in shapes(converted).items()
                if k in body or k.startswith('blocks.')} == body


def test_mismatched_pairing_is_caught() -> None:
    """The check above fails for a file paired with another config: the
    EVA-02-B COCO detector does not convert into the EVA-02-L config."""
    info = get_model_info('eva02_B_coco_bsl')
    source = official_layout(info.src_format, info.file_name,
                             'eva02-b-p16_cascade-mask-rcnn_lsj-1024_coco')
    large = (ROOT / 'configs/detection/'
             'eva02-l-p16_cascade-mask-rcnn_lsj-1024_coco.py')
    args = convert_eva.parse_args(
        ['--src-format', info.src_format, 'src', 'dst', '--config',
         str(large)])
    converted = convert_eva.SRC_FORMATS[info.src_format].convert(
        source, args).state_dict
    model = build_entry_model(str(large.relative_to(ROOT)))
    assert shapes(converted) != shapes(model.state_dict())


def test_unknown_name_lists_close_names() -> None:
    with pytest.raises(ModelZooError) as error:
        get_model_info('eva02-l-p16_cascade-mask-rcnn_lsj-1536_lvis')
    message = str(error.value)
    assert 'Did you mean: eva02-l-p16_cascade-mask-rcnn_lsj-1536_lvis-v1' \
        in message
    assert 'tools/model_zoo.py list' in message
    with pytest.raises(ModelZooError, match='eva_lvis'):
        get_model_info('eva_lvs')  # official names are suggested too


def test_official_names_resolve_when_unique() -> None:
    assert get_model_info('eva_lvis').config == (
        'configs/detection/'
        'eva-g-p16_cascade-mask-rcnn_lsj-1280_lvis-v1_test-1536.py')
    assert get_model_info('eva02_L_coco_sys').metrics == {
        'COCO box AP': 62.3, 'COCO mask AP': 53.8}
    # One file, six configs (IN-1K and five test sets): name the config.
    with pytest.raises(ModelZooError,
                       match='eva-g-p14_mim-in21k-pre_in1k-336px_test-'):
        get_model_info('eva_21k_1k_336px_psz14_ema')


def test_list_models_by_pattern_and_task() -> None:
    names = [info.name for info in list_models('eva02-l*lvis*')]
    assert names == [
        'eva02-l-p16_cascade-mask-rcnn_lsj-1024_lvis-v1',
        'eva02-l-p16_cascade-mask-rcnn_lsj-1536_lvis-v1',
        'eva02-l-p16_cascade-mask-rcnn_o365-pre_lsj-1536_lvis-v1',
    ]
    assert {info.name for info in list_models('k4')} == {
        'eva-g-p14_k722-pre_k400-ft_16x224'}
    videos = list_models(task='action recognition')
    assert [info.metrics for info in videos] == [
        {}, {'Kinetics-400 Top 1 Accuracy': 89.7},
        {'Kinetics-600 Top 1 Accuracy': 89.8},
        {'Kinetics-700 Top 1 Accuracy': 82.9}]


def test_docs_table_is_generated_from_the_metafiles() -> None:
    text = model_zoo.DOCS.read_text(encoding='utf-8')
    assert model_zoo.render_docs(text) == text
    for info in MODELS_BY_NAME.values():
        assert f'| `{info.name}` |' in text
    # The check sees a change of a metafile number.
    changed = text.replace('| LVIS v1 box AP 62.2', '| LVIS v1 box AP 62.3')
    assert changed != text and model_zoo.render_docs(changed) == text


def write_index(folder: Path, models: str) -> Path:
    """A model-index.yml with one metafile of the given Models entries."""
    (folder / 'metafile.yml').write_text(
        'Collections:\n  - Name: Tiny\nModels:\n' + models)
    index = folder / 'model-index.yml'
    index.write_text('Import:\n  - metafile.yml\n')
    return index


TINY_ENTRY = """\
  - Name: {name}
    In Collection: Tiny
    Config: configs/demo/eva-demo-p8_cascade-mask-rcnn_shapes.py
    Metadata:
      File: {file}
    Results:
      - Task: Masked Image Modeling
        Dataset: Shapes
    Weights: {url}
    Converter:
      Src Format: official
      Load: backbone
"""


def test_broken_metafiles_are_refused_with_the_place(tmp_path: Path) -> None:
    with pytest.raises(ModelZooError, match='No model index at'):
        load_model_index(tmp_path / 'model-index.yml')
    entry = TINY_ENTRY.format(name='tiny', file='other.pt',
                              url='https://x/tiny.pt')
    index = write_index(tmp_path, entry)
    with pytest.raises(ModelZooError,
                       match=r"model 'tiny': Metadata.File 'other.pt' is "
                       r"not the file of its URL, 'tiny.pt'"):
        load_model_index(index)
    entry = TINY_ENTRY.format(name='tiny', file='tiny.pt',
                              url='https://x/tiny.pt')
    (tmp_path / 'twice').mkdir()
    index = write_index(tmp_path / 'twice', entry + entry)
    with pytest.raises(ModelZooError, match="model 'tiny' is also listed"):
        load_model_index(index)
    (tmp_path / 'load').mkdir()
    index = write_index(tmp_path / 'load',
                        entry.replace('Load: backbone', 'Load: neck'))
    with pytest.raises(ModelZooError, match="Converter.Load is 'neck'"):
        load_model_index(index)


def test_tool_lists_and_downloads(file_server: FileServer, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    assert model_zoo.main(['list', 'lvis-v1_test']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ['NAME', 'TASK', 'CONFIG', 'OFFICIAL', 'RESULTS']
    row = out[-1].split()
    assert row[0] == 'eva-g-p16_cascade-mask-rcnn_lsj-1280_lvis-v1_test-1536'
    assert row[-2:] == ['AP', '55.0'] and 'configs/detection/' in row[3]

    torch.save(tiny_official_eva01(), tmp_path / 'tiny.pt')
    data = (tmp_path / 'tiny.pt').read_bytes()
    url = file_server.add('/BAAI/EVA/resolve/main/tiny.pt', data)
    index = write_index(tmp_path, TINY_ENTRY.format(
        name='tiny', file='tiny.pt', url=url))
    out_dir = tmp_path / 'downloads'
    assert model_zoo.main(['--index', str(index), 'download', 'tiny',
                           '--out-dir', str(out_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(out_dir / 'tiny.pt')
    assert (out_dir / 'tiny.pt').read_bytes() == data

    assert model_zoo.main(['--index', str(index), 'download', 'tyni']) == 1
    assert "No model 'tyni'" in capsys.readouterr().err


@pytest.mark.slow
def test_tool_converts_with_the_entry_format(file_server: FileServer,
                                             tmp_path: Path) -> None:
    """``convert NAME DST`` downloads the official file and runs
    convert_eva.py with the entry's --src-format: the EVAViT weights of the
    tiny EVA-01 MIM file, every tensor unchanged, the MIM head dropped."""
    weights = tiny_official_eva01()
    torch.save(weights, tmp_path / 'tiny.pt')
    weights = weights['module']
    url = file_server.add('/tiny.pt', (tmp_path / 'tiny.pt').read_bytes())
    index = write_index(tmp_path, TINY_ENTRY.format(
        name='tiny', file='tiny.pt', url=url))
    dst = tmp_path / 'tiny_eva_mm.pth'
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools/model_zoo.py'), '--index',
         str(index), 'convert', 'tiny', str(dst), '--out-dir',
         str(tmp_path / 'cache')],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert '--src-format official' in result.stdout
    assert 'holds backbone weights' in result.stdout
    converted = torch.load(dst, weights_only=True)['state_dict']
    assert set(converted) == set(weights) - {'lm_head.weight',
                                             'lm_head.bias'}
    for key, value in converted.items():
        assert torch.equal(value, weights[key]), key
    assert file_server.requests['/tiny.pt'] == 1
