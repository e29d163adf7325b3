"""A timm EVA-01 classifier converted and loaded into mmpretrain's classifier.

timm's ``Eva`` (random weights, ``global_pool='avg'``) is the reference: its
logits are computed by timm alone, then the classifier goes through
``tools/model_converters/convert_eva.py --classifier`` and mmengine's strict
``load_checkpoint`` into an ``ImageClassifier`` built from a config.
"""
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import load
from mmengine.runner import Runner, load_checkpoint
from mmpretrain.registry import MODELS
from PIL import Image
from timm.layers import resample_abs_pos_embed
from timm.models.eva import Eva

import eva_mm  # noqa: F401  (registers eva_mm.EVAViT)

# Builds mmpretrain models by unscoped names; the scope is dropped after.
pytestmark = pytest.mark.registry_scope('mmpretrain')

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


@pytest.mark.slow
@pytest.mark.registry_scope('mmpretrain')
def test_imagenet_a_config_scores_the_subset_through_the_runner(
        tmp_path, convert_eva) -> None:
    """The paper's ImageNet-A config, shrunk, tests a converted classifier.

    The Runner hands the subset's folder names to ClassSubsetAccuracy; the
    reference is timm's logits on the same pixels, cut down by hand to the
    subset's columns of the sorted superset.
    """
    reference = timm_classifier()
    src, dst = tmp_path / 'src.pth', tmp_path / 'cls.pth'
    torch.save(reference.state_dict(), src)
    convert_eva.main(['--src-format', 'timm', '--classifier', str(src),
                      str(dst)])
    # The model's 10 classes are the sorted folders of a train/ root; the
    # variant keeps 6 of them.
    superset = [f'n{7 * i + 3:08d}' for i in range(NUM_CLASSES)]
    for name in superset:
        (tmp_path / 'train' / name).mkdir(parents=True)
    subset = [superset[i] for i in (1, 2, 4, 5, 7, 8)]
    rng = np.random.default_rng(0)
    images, labels, paths = [], [], []
    for label, name in enumerate(subset):
        (tmp_path / 'variant' / name).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            path = tmp_path / 'variant' / name / f'{i}.png'
            Image.fromarray(pixels).save(path)
            images.append(pixels)
            labels.append(label)
            paths.append(str(path))

    cfg = Config.fromfile(
        str(ROOT / 'configs/classification/'
            'eva-g-p14_mim-in21k-pre_in1k-336px_test-imagenet-a.py'))
    cfg.model.backbone.update(arch=ARCH, img_size=32, patch_size=8,
                              with_cp=False)
    cfg.model.head.update(num_classes=NUM_CLASSES,
                          in_channels=ARCH['embed_dims'])
    cfg.test_dataloader.dataset.data_root = str(tmp_path / 'variant')
    cfg.test_dataloader.dataset.pipeline[1].scale = 32
    cfg.test_dataloader.dataset.pipeline[2].crop_size = 32
    cfg.test_dataloader.num_workers = 0
    cfg.test_evaluator.superset_classes = str(tmp_path / 'train')
    cfg.test_evaluator = [
        cfg.test_evaluator,
        dict(type='DumpResults', out_file_path=str(tmp_path / 'preds.pkl'))
    ]
    cfg.custom_hooks = []
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = str(dst)
    metrics = Runner.from_cfg(cfg).test()

    mean = torch.tensor(cfg.data_preprocessor.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data_preprocessor.std).view(1, 3, 1, 1)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        logits = reference((pixels - mean) / std)
    columns = [superset.index(name) for name in subset]
    rows = logits[:, columns]
    labels = torch.tensor(labels)
    ranks = rows.argsort(dim=1, descending=True)
    for k in (1, 5):
        hits = (ranks[:, :k] == labels[:, None]).any(dim=1).float().mean()
        assert metrics[f'accuracy/top{k}'] == pytest.approx(100. * hits.item())
    # And each image's scores were those of the converted classifier.
    dumped = {p['img_path']: p['pred_score']
              for p in load(tmp_path / 'preds.pkl')}
    assert sorted(dumped) == sorted(paths)
    for path, expected in zip(paths, logits.softmax(dim=1)):
        torch.testing.assert_close(dumped[path], expected, atol=1e-5, rtol=0)
