"""Zero-shot classification: eva_mm.OpenCLIPZeroShot with mmpretrain's
Accuracy, through the configs/clip config and the Runner."""
import sys
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from mmengine.config import Config
from PIL import Image
from tiny_eva_clip import CLIP_NAME, EVA_ARCH, IMG_SIZE

from eva_mm.engine.cli import build_runner
from eva_mm.models import EVAViT, OpenCLIPZeroShot
from eva_mm.models.classifiers.open_clip_zero_shot import openai_mean_std

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools' / 'model_converters'))
import eva_clip  # noqa: E402

NUM_CLASSES, PER_CLASS = 6, 2


def _eva_clip_checkpoint(tmp_path: Path, config: Path) -> Path:
    torch.manual_seed(3)
    eva = EVAViT(arch=dict(EVA_ARCH), img_size=IMG_SIZE)
    torch.save(dict(state_dict=eva.state_dict()), tmp_path / 'eva.pth')
    dst = tmp_path / 'eva_clip.pth'
    eva_clip.export(str(tmp_path / 'eva.pth'), str(dst), CLIP_NAME,
                    str(config))
    return dst


def _image_folder(root: Path) -> np.ndarray:
    """One random picture per class, saved PER_CLASS times; returns them."""
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (NUM_CLASSES, IMG_SIZE, IMG_SIZE, 3),
                            dtype=np.uint8)
    for label, picture in enumerate(pictures):
        folder = root / f'class_{label}'
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            Image.fromarray(picture).save(folder / f'{i}.png')
    return pictures


def test_crafted_class_embeddings_give_the_expected_accuracy(
        tmp_path, clip_config_file):
    checkpoint = _eva_clip_checkpoint(tmp_path, clip_config_file)
    pictures = _image_folder(tmp_path / 'data')

    # Image features straight from open_clip, normalised by hand.
    clip = open_clip.create_model(CLIP_NAME, pretrained=str(checkpoint))
    mean, std = openai_mean_std()
    images = (torch.from_numpy(pictures).permute(0, 3, 1, 2).float() -
              torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(
                  3, 1, 1)
    with torch.no_grad():
        features = F.normalize(clip.eval().encode_image(images), dim=-1)
    # Each class is its pictures' feature, the text of classes 0 and 1
    # swapped: pictures 2..5 match their class exactly (cosine 1), 0 and 1
    # match the other one, so top-1 is 4/6.
    crafted = features.clone()
    crafted[[0, 1]] = features[[1, 0]]
    torch.save(crafted * 3.0, tmp_path / 'classes.pt')  # normalised there
    similarity = (features @ crafted.t()).numpy()
    ranks = (-similarity).argsort(axis=1)
    labels = np.arange(NUM_CLASSES)
    top5 = 100 * np.mean([label in ranks[label, :5] for label in labels])
    assert (ranks[:, 0] == labels).sum() == 4

    classnames = tmp_path / 'classnames.txt'
    classnames.write_text(''.join(f'thing {i}\n' for i in labels))
    cfg = Config.fromfile(
        str(ROOT / 'configs/clip/eva-clip-g14_zero-shot_imagefolder.py'))
    cfg.model.update(
        model_name=CLIP_NAME,
        model_config=str(clip_config_file),
        classnames=str(classnames),
        text_embeddings=str(tmp_path / 'classes.pt'))
    cfg.test_dataloader.update(batch_size=4, num_workers=0)
    cfg.test_dataloader.dataset.data_root = str(tmp_path / 'data')
    pipeline = cfg.test_dataloader.dataset.pipeline
    pipeline[1].scale, pipeline[2].crop_size = IMG_SIZE, IMG_SIZE
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = str(checkpoint)  # what tools/test.py does
    cfg.launcher = 'none'
    cfg.env_cfg.dist_cfg = dict(backend='gloo')

    metrics = build_runner(cfg).test()
    assert abs(metrics['accuracy/top1'] - 100 * 4 / 6) < 1e-4
    assert abs(metrics['accuracy/top5'] - top5) < 1e-4


def test_prompt_ensemble_matches_open_clip(clip_config_file):
    templates = ['a photo of a {}.', 'art of the {}.', 'a {} in a game.']
    torch.manual_seed(0)
    model = OpenCLIPZeroShot(
        CLIP_NAME,
        model_config=str(clip_config_file),
        classnames=['cat', 'dog', 'ship'],
        templates=templates).eval()
    tokenizer = open_clip.get_tokenizer(CLIP_NAME)
    with torch.no_grad():
        expected = []
        for name in ['cat', 'dog', 'ship']:
            prompts = torch.stack([
                model.clip.encode_text(tokenizer([t.format(name)]))[0]
                for t in templates
            ])
            mean = (prompts / prompts.norm(dim=-1, keepdim=True)).mean(0)
            expected.append(mean / mean.norm())
        torch.testing.assert_close(
            model.encode_classes(), torch.stack(expected), rtol=0,
            atol=1e-6)

    # The prompt sets and class names are open_clip's ImageNet ones.
    imagenet = OpenCLIPZeroShot(
        CLIP_NAME, model_config=str(clip_config_file))
    assert len(imagenet.classnames) == 1000 and len(imagenet.templates) == 80
    assert imagenet.templates[0]('goldfish') == 'a bad photo of a goldfish.'


def test_imagenet_config_is_open_clip_evaluation():
    cfg = Config.fromfile(
        str(ROOT / 'configs/clip/eva-clip-g14_zero-shot_in1k.py'))
    assert cfg.model.type == 'eva_mm.OpenCLIPZeroShot'
    assert (cfg.model.model_name, cfg.model.classnames,
            cfg.model.templates) == ('EVA01-g-14', 'imagenet',
                                     'openai_imagenet')
    assert cfg.custom_imports.imports == ['eva_mm']
    dataset = cfg.test_dataloader.dataset
    assert (dataset.type, dataset.split) == ('ImageNet', 'val')
    resize, crop = dataset.pipeline[1], dataset.pipeline[2]
    assert (resize.scale, resize.edge, resize.interpolation,
            crop.crop_size) == (224, 'short', 'bicubic', 224)
    assert cfg.test_evaluator == dict(type='Accuracy', topk=(1, 5))
    # open_clip's EVA01-g-14 preprocessing: 224 px, OpenAI mean/std.
    preprocess = open_clip.get_model_config('EVA01-g-14')['vision_cfg']
    assert preprocess['image_size'] == 224
    # OpenAI CLIP's Normalize (openai/CLIP clip/clip.py), which the EVA CLIP
    # evaluation uses.
    mean, std = openai_mean_std()
    assert np.allclose(np.array(mean) / 255,
                       (0.48145466, 0.4578275, 0.40821073))
    assert np.allclose(np.array(std) / 255,
                       (0.26862954, 0.26130258, 0.27577711))
