"""Predict on one image or every image of a folder with a detector or
segmentor config, drawing and saving each prediction.

Writes, for every image ``NAME.EXT``:

- ``OUT_DIR/vis/NAME.png``: the prediction drawn over the image;
- ``OUT_DIR/preds/NAME.json``: the prediction (see
  ``eva_mm.apis.result_to_json``);
- ``OUT_DIR/preds/NAME_label.png``: for segmentation, the label map.

CHECKPOINT is a file, an ``http(s)://`` URL or a model-zoo name, in
eva_mm's layout or a released file's own (converted in memory); ``--model
NAME`` takes a zoo name's config and official file, without CONFIG and
CHECKPOINT.

In a folder, unreadable images are reported and skipped; a single unreadable
image, a missing checkpoint or a config that is neither mmdet nor mmseg is
an error, and so is a checkpoint that lacks weights of the model (it names
them) unless ``--allow-partial-load`` is given.

Examples:
    python tools/image_demo.py demo.jpg CONFIG CHECKPOINT --out-dir out
    python tools/image_demo.py demo.jpg --model NAME --out-dir out
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List

import mmcv
import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import eva_mm  # noqa: E402,F401  (the eva_mm scope for custom_imports)
from eva_mm.apis import (class_names, draw_result, inference,  # noqa: E402
                         init_model, result_to_json, task_scope)
from eva_mm.checkpoints.errors import CheckpointError  # noqa: E402
from eva_mm.checkpoints.sources import checkpoint_location  # noqa: E402

IMAGE_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Single-image / folder inference')
    parser.add_argument('image', help='an image file or a folder of images')
    parser.add_argument(
        'config', nargs='?', help='config file (mmdet or mmseg)')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        help='checkpoint file, http(s):// URL or model-zoo name')
    parser.add_argument(
        '--model',
        metavar='NAME',
        help='a model-zoo name (python tools/model_zoo.py list): its config '
        'and official file, instead of CONFIG and CHECKPOINT')
    parser.add_argument(
        '--checkpoint-format',
        metavar='NAME',
        help='the registered format the checkpoint is in, for an official '
        'file whose format its names do not tell')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--score-thr',
        type=float,
        default=0.3,
        help='detections below this score are neither drawn nor saved')
    parser.add_argument(
        '--allow-partial-load',
        action='store_true',
        help='run even if the checkpoint lacks some of the model\'s weights '
        '(or has them in another shape); they keep their random '
        'initialisation and are listed. Without it such a checkpoint is '
        'refused.')
    args = parser.parse_args()
    if (args.model is None) == (args.config is None) or (
            args.config is not None and args.checkpoint is None):
        parser.error('give CONFIG and CHECKPOINT, or --model NAME')
    return args


def list_images(path: str) -> List[str]:
    """The image files to run: ``path`` itself or the folder's images.

    Raises:
        FileNotFoundError: ``path`` does not exist, or the folder has no
            image.
    """
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'No such image or folder: {path}')
    images = sorted(
        osp.join(path, name) for name in os.listdir(path)
        if name.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise FileNotFoundError(
            f'No image ({", ".join(IMAGE_EXTENSIONS)}) in {path}')
    return images


def main() -> None:
    args = parse_args()
    try:
        images = list_images(args.image)
        if args.config is not None:
            task_scope(args.config)
            # A zoo name is looked up, a URL fetched, when the model loads.
            checkpoint_location(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        # Before loading the model, which takes a while for large ones.
        sys.exit(f'error: {error}')
    try:
        model = init_model(
            args.model or args.config,
            args.checkpoint,
            device=args.device,
            allow_partial_load=args.allow_partial_load,
            checkpoint_format=args.checkpoint_format)
    except (FileNotFoundError, ValueError, CheckpointError) as error:
        sys.exit(f'error: {error}')
    names = class_names(model)
    vis_dir = osp.join(args.out_dir, 'vis')
    pred_dir = osp.join(args.out_dir, 'preds')
    os.makedirs(vis_dir, exist_ok=True)
    os.makedirs(pred_dir, exist_ok=True)
    skipped = []
    for path in images:
        # Decode here: the pipeline's own error on a bad file does not say
        # which file, and a folder run should go on past it.
        image = mmcv.imread(path)
        if not isinstance(image, np.ndarray):
            if len(images) == 1:
                sys.exit(f'error: cannot read image {path}')
            print(f'skipping unreadable image {path}', file=sys.stderr)
            skipped.append(path)
            continue
        stem = osp.splitext(osp.basename(path))[0]
        result = inference(model, path)
        draw_result(model, image, result, osp.join(vis_dir, stem + '.png'),
                    args.score_thr)
        label_file = osp.join(pred_dir, stem + '_label.png')
        prediction = result_to_json(
            result, names, args.score_thr,
            label_file=label_file if 'pred_sem_seg' in result else None)
        with open(osp.join(pred_dir, stem + '.json'), 'w') as f:
            json.dump(dict(image=path, **prediction), f)
        print(f'{path} -> {osp.join(vis_dir, stem + ".png")}')
    if skipped:
        print(f'skipped {len(skipped)} unreadable image(s): '
              f'{", ".join(skipped)}', file=sys.stderr)
    if len(skipped) == len(images):
        sys.exit('error: no image could be read')


if __name__ == '__main__':
    main()
