"""The demo detector in the layout of a released EVA-01 detector, and a
model index that lists such a file, for the tests that load official files
through the entry points (tools/test.py, load_from, init_model,
image_demo.py).

The names are detectron2's, as EVA-01/det builds them for the ViTDet/EVA
Cascade Mask R-CNN (the layout of tests/test_det/
test_official_det_converter.py); the sizes are those of the tiny demo
config (tests/test_det/test_cascade_demo.py), read from it: a ViT whose
224 px position embedding has a cls entry, a simple feature pyramid of
ConvTranspose2d / identity / max-pool levels with LN convs, a one-conv RPN,
three cascade stages of two-fc box heads and a mask head without norms.
"""
import sys
from pathlib import Path
from typing import Dict, Tuple

import torch
from mmengine.config import Config

TESTS = Path(__file__).resolve().parents[1]
# Test folders without __init__.py: pytest puts each on sys.path when it
# collects it; this module may be imported first.
for _folder in ('test_det', 'test_zoo'):
    if str(TESTS / _folder) not in sys.path:
        sys.path.append(str(TESTS / _folder))

from test_cascade_demo import TINY_SET, tiny_demo_config  # noqa: E402,F401
from test_model_zoo import write_index  # noqa: E402
from test_official_det_converter import vit_block_shapes  # noqa: E402

# EVA-01/det/projects/ViTDet/configs/common/coco_loader_lsj.py: the ViT
# was pre-trained at 224 px (pretrain_img_size, vit.py:386-388).
PRETRAIN_SIZE = 224

ZOO_ENTRY = """\
  - Name: {name}
    In Collection: Tiny
    Config: {config}
    Metadata:
      File: {file}
    Results:
      - Task: {task}
        Dataset: Synthetic
    Weights: {url}
    Converter:
      Src Format: {src_format}
      Load: model
"""


def detectron2_shapes(cfg: Config) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of the config's detector as detectron2 saves it.

    Args:
        cfg: The tiny demo config.

    Returns:
        ``{name: shape}``.
    """
    model = cfg.model
    backbone = model.backbone
    dim, depth = backbone.arch.embed_dims, backbone.arch.num_layers
    heads, mlp = backbone.arch.num_heads, backbone.arch.mlp_hidden_dim
    patch, grid = backbone.patch_size, backbone.img_size // backbone.patch_size
    channels = model.neck.out_channels
    shapes = {
        'backbone.net.patch_embed.proj.weight': (dim, 3, patch, patch),
        'backbone.net.patch_embed.proj.bias': (dim, ),
        'backbone.net.pos_embed': (1, (PRETRAIN_SIZE // patch)**2 + 1, dim),
    }
    for i in range(depth):
        side = grid if i in backbone.global_block_indexes else \
            backbone.window_size
        shapes.update(vit_block_shapes(f'backbone.net.blocks.{i}.', dim,
                                       heads, mlp, side))

    def conv(prefix: str, cout: int, cin: int, k: int, norm: bool) -> None:
        shapes[prefix + '.weight'] = (cout, cin, k, k)
        if norm:
            shapes[prefix + '.norm.weight'] = (cout, )
            shapes[prefix + '.norm.bias'] = (cout, )
        else:
            shapes[prefix + '.bias'] = (cout, )

    # SimpleFeaturePyramid (vit.py:490-546): stage log2(stride); scale 2 is
    # one ConvTranspose2d to dim // 2, scale 1 nothing, scale 0.5 a
    # max-pool; then a 1x1 and a 3x3 Conv2d with LN and no bias.
    for scale in model.neck.scale_factors:
        stage = int(torch.log2(torch.tensor(patch / scale)).item())
        first, cin = 0, dim
        if scale == 2.0:
            shapes[f'backbone.simfp_{stage}.0.weight'] = (dim, dim // 2, 2, 2)
            shapes[f'backbone.simfp_{stage}.0.bias'] = (dim // 2, )
            first, cin = 1, dim // 2
        elif scale == 0.5:
            first = 1
        conv(f'backbone.simfp_{stage}.{first}', channels, cin, 1, True)
        conv(f'backbone.simfp_{stage}.{first + 1}', channels, channels, 3,
             True)
    # StandardRPNHead with one conv (rpn.py:62-117): 'conv', not a stack.
    anchors = len(model.rpn_head.anchor_generator.scales) * len(
        model.rpn_head.anchor_generator.ratios)
    rpn = 'proposal_generator.rpn_head.'
    conv(rpn + 'conv', channels, channels, 3, False)
    shapes.update({
        rpn + 'objectness_logits.weight': (anchors, channels, 1, 1),
        rpn + 'objectness_logits.bias': (anchors, ),
        rpn + 'anchor_deltas.weight': (4 * anchors, channels, 1, 1),
        rpn + 'anchor_deltas.bias': (4 * anchors, ),
    })
    roi_size = model.roi_head.bbox_head[0].roi_feat_size
    for k, head in enumerate(model.roi_head.bbox_head):
        # FastRCNNConvFCHead(fc_dims=[fc, fc]) and class-agnostic
        # FastRCNNOutputLayers, background last (fast_rcnn.py:270-296).
        fc = head.fc_out_channels
        box = f'roi_heads.box_head.{k}.'
        shapes.update({
            box + 'fc1.weight': (fc, channels * roi_size**2),
            box + 'fc1.bias': (fc, ),
            box + 'fc2.weight': (fc, fc),
            box + 'fc2.bias': (fc, ),
            f'roi_heads.box_predictor.{k}.cls_score.weight':
            (head.num_classes + 1, fc),
            f'roi_heads.box_predictor.{k}.cls_score.bias':
            (head.num_classes + 1, ),
            f'roi_heads.box_predictor.{k}.bbox_pred.weight': (4, fc),
            f'roi_heads.box_predictor.{k}.bbox_pred.bias': (4, ),
        })
    # MaskRCNNConvUpsampleHead without norm (mask_head.py).
    mask = model.roi_head.mask_head
    for j in range(1, mask.num_convs + 1):
        conv(f'roi_heads.mask_head.mask_fcn{j}', mask.conv_out_channels,
             channels, 3, False)
    shapes.update({
        'roi_heads.mask_head.deconv.weight':
        (mask.conv_out_channels, mask.conv_out_channels, 2, 2),
        'roi_heads.mask_head.deconv.bias': (mask.conv_out_channels, ),
        'roi_heads.mask_head.predictor.weight':
        (mask.num_classes, mask.conv_out_channels, 1, 1),
        'roi_heads.mask_head.predictor.bias': (mask.num_classes, ),
        # GeneralizedRCNN's normalisation buffers, which the converter
        # drops (the data preprocessor holds them).
        'pixel_mean': (3, 1, 1),
        'pixel_std': (3, 1, 1),
    })
    return shapes


def official_demo_file(cfg: Config, seed: int = 0) -> dict:
    """A released-detector file of the config's model: random weights under
    ``'model'``, as detectron2's checkpointer saves them.

    Args:
        cfg: The tiny demo config.
        seed: The seed of the values.

    Returns:
        The checkpoint, to ``torch.save``.
    """
    generator = torch.Generator().manual_seed(seed)
    return {
        'model': {
            key: torch.randn(shape, generator=generator) * 0.2
            for key, shape in detectron2_shapes(cfg).items()
        },
        'iteration': 90000,
    }


def demo_index(folder: Path,
               name: str,
               config: Path,
               url: str,
               src_format: str = 'official-det',
               task: str = 'Object Detection') -> Path:
    """A model index listing one official file of a whole model as
    ``name``.

    Args:
        folder: Where to write ``model-index.yml`` and its metafile.
        name: The zoo name.
        config: The (tiny) config file.
        url: The file's URL.
        src_format: The file's format.
        task: The task of its results.

    Returns:
        The ``model-index.yml``.
    """
    return write_index(folder, ZOO_ENTRY.format(
        name=name, config=config, file=url.rsplit('/', 1)[1], url=url,
        src_format=src_format, task=task))
