"""Official files load as they are, through every entry point, with no
manual conversion: by path, by URL (a local server stands in for the
hub) and by model-zoo name (a test model index, EVA_MM_MODEL_INDEX).

The file is the demo detector in the layout of a released EVA-01 detector
(tests/test_zoo/official_demo.py). The reference is the same file
converted by hand with tools/model_converters/convert_eva.py: every entry
point must load exactly its weights and predict exactly what it predicts.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import torch

from eva_mm.apis import inference, init_model, result_to_json
from eva_mm.checkpoints.download import (DownloadError,
                                         IncompleteCheckpointError)
from eva_mm.checkpoints.errors import (CheckpointError,
                                       CheckpointFormatError,
                                       CheckpointMismatchError)
from eva_mm.checkpoints.zoo import (MODEL_INDEX_ENV, load_model_index,
                                    models_for_url)
from eva_mm.datasets.synthetic import (DEMO_SHAPES_CLASSES,
                                       generate_demo_shapes)
from eva_mm.engine import register_mmengine_safe_globals
from file_server import FileServer
from log_messages import log_messages
from official_demo import (TINY_SET, demo_index, official_demo_file,
                           tiny_demo_config)

ROOT = Path(__file__).resolve().parents[2]
FILE = 'eva_demo_det.pth'
URL_PATH = f'/BAAI/EVA/resolve/main/{FILE}'
NAME = 'eva-demo_cascade-mask-rcnn_official'

pytestmark = pytest.mark.registry_scope('mmdet')


@pytest.fixture(scope='module')
def demo(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """The tiny set, the tiny demo config as a file, the official file and
    its conversion by convert_eva.py."""
    root = tmp_path_factory.mktemp('official_demo')
    generate_demo_shapes(str(root / 'set'), **TINY_SET)
    cfg = tiny_demo_config(str(root / 'set'), str(root / 'work'))
    config = root / 'tiny_demo.py'
    cfg.dump(str(config))
    official = root / FILE
    torch.save(official_demo_file(cfg), official)
    reference = root / 'converted.pth'
    spec = importlib.util.spec_from_file_location(
        'convert_eva', ROOT / 'tools/model_converters/convert_eva.py')
    convert_eva = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert_eva)
    convert_eva.main(['--src-format', 'official-det', str(official),
                      str(reference), '--config', str(config)])
    return dict(root=root, config=config, official=official,
                reference=reference,
                image=root / 'set' / 'val' / '000000.png')


def reference_weights(demo: Dict[str, Path]) -> Dict[str, torch.Tensor]:
    return torch.load(demo['reference'], weights_only=True)['state_dict']


def assert_same_weights(model: torch.nn.Module,
                        expected: Dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key].cpu(), value), key


def serve(demo: Dict[str, Path], file_server: FileServer) -> str:
    """The official file on the local server."""
    return file_server.add(URL_PATH, demo['official'].read_bytes())


def index_file(demo: Dict[str, Path], tmp_path: Path, url: str) -> str:
    """A model index naming the file at ``url`` :data:`NAME`."""
    return str(demo_index(tmp_path / 'zoo', NAME, demo['config'], url))


@pytest.fixture
def zoo_env(tmp_path: Path, checkpoint_cache: Path,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh checkpoint cache, and room for a test model index (the
    checkout's until a test names one)."""
    (tmp_path / 'zoo').mkdir()
    monkeypatch.setenv(MODEL_INDEX_ENV, '')
    return checkpoint_cache


def test_init_model_by_url_name_and_path(demo: Dict[str, Path],
                                         file_server: FileServer,
                                         tmp_path: Path,
                                         zoo_env: Path) -> None:
    url = serve(demo, file_server)
    expected = reference_weights(demo)
    with log_messages() as messages:
        by_url = init_model(str(demo['config']), url)
    assert_same_weights(by_url, expected)
    assert by_url.dataset_meta['classes'] == DEMO_SHAPES_CLASSES
    log = '\n'.join(messages)
    assert f'{url}: official-det layout (recognised from its keys)' in log
    assert 'dropped 2 key(s) without a counterpart: pixel_mean, ' \
        'pixel_std' in log
    assert (zoo_env / FILE).read_bytes() == demo['official'].read_bytes()

    # The zoo name: its config and file (cached: no second request), the
    # format named by the entry.
    os.environ[MODEL_INDEX_ENV] = index_file(demo, tmp_path, url)
    with log_messages() as messages:
        by_name = init_model(NAME)
    assert_same_weights(by_name, expected)
    assert f'the model-zoo entry {NAME}' in '\n'.join(messages)
    assert file_server.requests[URL_PATH] == 1
    assert_same_weights(init_model(str(demo['config']), str(zoo_env / FILE)),
                        expected)

    # The package's inferencer takes the name, as mmdet's takes its own.
    from eva_mm.apis.inferencers import EVADetInferencer
    got = EVADetInferencer(model=NAME, device='cpu')(
        [str(demo['image'])], return_datasamples=True)['predictions'][0]
    want = inference(init_model(str(demo['config']), str(demo['reference'])),
                     str(demo['image']))
    for key in ('bboxes', 'scores', 'labels', 'masks'):
        assert torch.equal(got.pred_instances[key], want.pred_instances[key])
    assert len(want.pred_instances) > 0


def test_segmentor_inferencer_takes_a_zoo_name(file_server: FileServer,
                                               tmp_path: Path,
                                               zoo_env: Path) -> None:
    """EVASegInferencer(model=NAME) on a released EVA-02 UperNet file (the
    converter tests' shrunk layout) predicts what the file converted by
    hand predicts, with the ADE20K classes of the config."""
    import cv2
    import numpy as np

    from eva_mm.apis.inferencers import EVASegInferencer
    from eva_mm.checkpoints.converters import SRC_FORMATS, save_converted
    from test_seg.test_eva02_seg import random_official, shrunk
    cfg = shrunk('eva02-l-p16_upernet_80k_ade20k-512')
    config = tmp_path / 'upernet_tiny.py'
    cfg.dump(str(config))
    official = tmp_path / 'eva02_L_ade_seg_upernet_sz512.pth'
    # mmseg 0.x's checkpoint: the weights under 'state_dict'.
    torch.save({'state_dict': random_official()}, official)
    url = file_server.add('/seg/' + official.name, official.read_bytes())
    os.environ[MODEL_INDEX_ENV] = str(demo_index(
        tmp_path / 'zoo', 'tiny-upernet', config, url,
        'official-eva02-seg', 'Semantic Segmentation'))
    converted = tmp_path / 'converted.pth'
    conversion = SRC_FORMATS['official-eva02-seg'].convert(
        torch.load(official, weights_only=True)['state_dict'], None)
    save_converted(conversion, str(converted), str(official),
                   'official-eva02-seg')
    image = tmp_path / 'image.png'
    cv2.imwrite(str(image), np.random.default_rng(0).integers(
        0, 255, (64, 80, 3), dtype=np.uint8))

    inferencer = EVASegInferencer(model='tiny-upernet', device='cpu')
    got = inferencer([str(image)], return_datasamples=True)
    want = inference(init_model(str(config), str(converted)), str(image))
    assert torch.equal(got.seg_logits.data, want.seg_logits.data)
    assert len(inferencer.model.dataset_meta['classes']) == 150


def test_load_errors_name_the_file_and_the_fix(demo: Dict[str, Path],
                                              file_server: FileServer,
                                              tmp_path: Path,
                                              zoo_env: Path) -> None:
    config = str(demo['config'])
    # A file cut short in the cache (what torch.hub leaves) is refused.
    url = file_server.add('/cut/' + FILE, demo['official'].read_bytes())
    zoo_env.mkdir(parents=True)
    data = demo['official'].read_bytes()
    (zoo_env / FILE).write_bytes(data[:len(data) // 2])
    with pytest.raises(IncompleteCheckpointError) as error:
        init_model(config, url)
    assert str(zoo_env / FILE) in str(error.value)
    assert 'Delete it' in str(error.value)
    assert file_server.requests['/cut/' + FILE] == 0

    # A name of another format, or of none.
    with pytest.raises(CheckpointError, match='EVA-01 ViT-Adapter'):
        init_model(config, str(demo['official']),
                   checkpoint_format='official-seg')
    with pytest.raises(CheckpointFormatError,
                       match="checkpoint_format=NAME.*'official_det'"):
        init_model(config, str(demo['official']),
                   checkpoint_format='official_det')
    # Names of no known layout: the strict check says so.
    foreign = tmp_path / 'foreign.pth'
    torch.save({f'detector.{k}': v
                for k, v in reference_weights(demo).items()}, foreign)
    with pytest.raises(CheckpointMismatchError) as error:
        init_model(config, str(foreign))
    message = str(error.value)
    assert 'no registered checkpoint format recognises its names' in message
    assert 'checkpoint_format=NAME' in message
    with pytest.raises(FileNotFoundError,
                       match='nope.pth does not exist: it is no file'):
        init_model(config, str(tmp_path / 'nope.pth'))


def test_mmengine_url_loads_use_the_safe_download(
        demo: Dict[str, Path], file_server: FileServer,
        zoo_env: Path) -> None:
    """Once eva_mm has set up checkpoint loading, mmengine's own URL loads
    (load_from, init_cfg of any module) go through eva_mm's download."""
    from mmengine.runner import CheckpointLoader, load_checkpoint

    from eva_mm.engine import setup_checkpoint_loading
    setup_checkpoint_loading()
    data = demo['reference'].read_bytes()
    url = file_server.add('/w/converted.pth', data)
    checkpoint = CheckpointLoader.load_checkpoint(url)
    assert set(checkpoint['state_dict']) == set(reference_weights(demo))
    assert (zoo_env / 'converted.pth').read_bytes() == data

    cut = file_server.add('/w/cut.pth', data, stop_after=len(data) // 2)
    with pytest.raises(DownloadError, match='connection closed early'):
        load_checkpoint(torch.nn.Linear(1, 1), cut)
    assert sorted(p.name for p in zoo_env.iterdir()) == ['converted.pth']


def test_model_index_from_the_environment(demo: Dict[str, Path],
                                          file_server: FileServer,
                                          tmp_path: Path,
                                          zoo_env: Path) -> None:
    url = serve(demo, file_server)
    os.environ[MODEL_INDEX_ENV] = index_file(demo, tmp_path, url)
    assert list(load_model_index()) == [NAME]
    assert [info.name for info in models_for_url(url)] == [NAME]
    os.environ[MODEL_INDEX_ENV] = str(tmp_path / 'none' / 'model-index.yml')
    assert models_for_url(url) == []  # no index: a URL is just a URL


def test_backbone_entries_are_not_whole_models(tmp_path: Path,
                                               zoo_env: Path) -> None:
    from mmengine.config import Config

    from eva_mm.engine.cli import locate_load_from
    from test_model_zoo import TINY_ENTRY, write_index
    os.environ[MODEL_INDEX_ENV] = str(write_index(
        tmp_path / 'zoo', TINY_ENTRY.format(name='tiny-mim', file='m.pt',
                                            url='http://127.0.0.1:9/m.pt')))
    with pytest.raises(CheckpointError,
                       match="holds backbone weights.*init_cfg"):
        locate_load_from(Config(dict(load_from='tiny-mim')))


def run_tool(tool: str, *args: str,
             env: Dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / tool), *args], cwd=ROOT,
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, **env))
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def tool_env(tmp_path: Path, index: str = '') -> Dict[str, str]:
    return {'TORCH_HOME': str(tmp_path / 'torch'), MODEL_INDEX_ENV: index}


def coco_results(folder: Path) -> Dict[str, object]:
    return {kind: json.loads((folder / f'results.{kind}.json').read_text())
            for kind in ('bbox', 'segm')}


@pytest.mark.slow
def test_tools_test_evaluates_the_official_file(demo: Dict[str, Path],
                                                file_server: FileServer,
                                                tmp_path: Path,
                                                zoo_env: Path) -> None:
    """tools/test.py CONFIG URL and tools/test.py NAME evaluate the official
    file to the results of the converted file, detection for detection."""
    url = serve(demo, file_server)
    index = index_file(demo, tmp_path, url)
    runs = {
        'converted': ([str(demo['config']), str(demo['reference'])], ''),
        'url': ([str(demo['config']), url], ''),
        'name': ([NAME], index),
    }
    outputs = {}
    for run, (args, run_index) in runs.items():
        out = tmp_path / run
        result = run_tool(
            'test.py', *args, '--work-dir', str(out), '--cfg-options',
            f'test_evaluator.outfile_prefix={out / "results"}',
            env=tool_env(tmp_path, run_index))
        outputs[run] = result.stdout + result.stderr
        assert 'coco/bbox_mAP' in outputs[run]
    assert 'official-det layout (recognised from its keys)' in outputs['url']
    assert f'official-det layout (the model-zoo entry {NAME})' in outputs[
        'name']
    assert 'pixel_mean, pixel_std' in outputs['url']
    assert 'layout' not in outputs['converted']
    expected = coco_results(tmp_path / 'converted')
    assert expected['bbox'] and expected['segm']
    for run in ('url', 'name'):
        assert coco_results(tmp_path / run) == expected, run
    assert file_server.requests[URL_PATH] == 1


@pytest.mark.slow
def test_image_demo_by_name_and_url(demo: Dict[str, Path],
                                    file_server: FileServer, tmp_path: Path,
                                    zoo_env: Path) -> None:
    url = serve(demo, file_server)
    env = tool_env(tmp_path, index_file(demo, tmp_path, url))
    image = str(demo['image'])
    run_tool('image_demo.py', image, '--model', NAME, '--out-dir',
             str(tmp_path / 'by_name'), '--device', 'cpu', env=env)
    run_tool('image_demo.py', image, str(demo['config']), url, '--out-dir',
             str(tmp_path / 'by_url'), '--device', 'cpu', env=env)
    model = init_model(str(demo['config']), str(demo['reference']))
    expected = dict(image=image, **result_to_json(
        inference(model, image), DEMO_SHAPES_CLASSES))
    assert expected['instances']
    for run in ('by_name', 'by_url'):
        got = json.loads(
            (tmp_path / run / 'preds' / '000000.json').read_text())
        assert got.keys() == expected.keys()
        assert [i['class_name'] for i in got['instances']] == [
            i['class_name'] for i in expected['instances']]
        for mine, theirs in zip(got['instances'], expected['instances']):
            assert mine['mask'] == theirs['mask']
            assert mine['bbox'] == pytest.approx(theirs['bbox'], abs=1e-4)
            assert mine['score'] == pytest.approx(theirs['score'], abs=1e-6)


@pytest.mark.slow
def test_training_starts_from_an_official_url(demo: Dict[str, Path],
                                              file_server: FileServer,
                                              tmp_path: Path,
                                              zoo_env: Path) -> None:
    """load_from=URL into a model of 6 classes, as a fine-tuning on another
    class set (the issue's eva_lvis.pth case): one step at lr 0 saves
    exactly the converted weights, but for the class scores and mask
    predictor, which keep their initialisation."""
    url = serve(demo, file_server)
    work = tmp_path / 'train'
    classes = [
        f'model.roi_head.bbox_head.{k}.num_classes=6' for k in range(3)
    ]
    result = run_tool(
        'train.py', str(demo['config']), '--work-dir', str(work),
        '--cfg-options', f'load_from={url}', *classes,
        'model.roi_head.mask_head.num_classes=6',
        'optim_wrapper.optimizer.lr=0',
        'optim_wrapper.optimizer.weight_decay=0', 'train_cfg.max_iters=1',
        'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1',
        'param_scheduler=[]', env=tool_env(tmp_path))
    output = result.stdout + result.stderr
    assert 'official-det layout (recognised from its keys)' in output
    assert f'Load checkpoint from {url}' in output
    register_mmengine_safe_globals()  # the runner's checkpoint
    saved = torch.load(work / 'iter_1.pth', weights_only=True)['state_dict']
    expected = reference_weights(demo)
    assert set(saved) == set(expected)
    skipped = {key for key in expected
               if saved[key].shape != expected[key].shape}
    assert skipped == {
        *(f'roi_head.bbox_head.{k}.fc_cls.{p}' for k in range(3)
          for p in ('weight', 'bias')),
        'roi_head.mask_head.conv_logits.weight',
        'roi_head.mask_head.conv_logits.bias'
    }
    for key in set(expected) - skipped:
        assert torch.equal(saved[key], expected[key]), key
    assert 'roi_head.mask_head.conv_logits.weight' in output  # listed
