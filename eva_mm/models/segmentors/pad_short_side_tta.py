"""Multi-scale test-time augmentation with EVA-01's short-side padding."""
from typing import List, Sequence

import torch.nn.functional as F
from mmseg.models.segmentors import SegTTAModel
from torch import Tensor

from eva_mm.registry import MODELS


@MODELS.register_module()
class PadShortSideSegTTAModel(SegTTAModel):
    """mmseg's ``SegTTAModel`` that first pads every small view to a size.

    EVA-01's multi-scale test (official
    ``seg/configs/ade20k/eva_mask2former_896_20k_coco164k2ade20k_ms.py:140``,
    ``PadShortSide(size=896, pad_val=0)`` in
    ``seg/mmseg_custom/datasets/pipelines/transform.py:248-302``) pads each
    view whose height or width is below 896 at the bottom and right with
    raw pixel value 0, before normalisation, so that every sliding window
    is a full 896 x 896 one, as in training; the prediction of the padding
    is cut off before the view is resized back to the image
    (``segmentors/encoder_decoder_mask2former_aug.py:192-196``). Views at
    least ``size`` on both sides are left as they are.

    Here the raw (not yet normalised) images of every view are padded
    before the model's data preprocessor, and the padding is recorded in
    each sample's ``padding_size`` ([left, right, top, bottom]), which
    mmseg's ``postprocess_result`` cuts off before the resize to
    ``ori_shape``. The rest (softmax of each view, mean, argmax) is
    ``SegTTAModel``'s, as in the official ``aug_test``.

    Args:
        size: The side each view is padded to at least (896 in EVA-01).
        pad_val: Raw pixel value of the padding (0 in EVA-01).
        **kwargs: ``SegTTAModel`` arguments (``module``, ...).
    """

    def __init__(self, size: int = 896, pad_val: float = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if size <= 0:
            raise ValueError(f'size must be positive, got {size}.')
        self.size = size
        self.pad_val = pad_val

    def _pad(self, images: Sequence[Tensor],
             samples: Sequence) -> List[Tensor]:
        padded = []
        for image, sample in zip(images, samples):
            height, width = image.shape[-2:]
            pad_h = max(self.size - height, 0)
            pad_w = max(self.size - width, 0)
            if pad_h or pad_w:
                # Bottom and right, as mmcv.impad.
                image = F.pad(image, (0, pad_w, 0, pad_h), value=self.pad_val)
                left, right, top, bottom = sample.metainfo.get(
                    'padding_size', [0, 0, 0, 0])
                sample.set_metainfo(
                    dict(padding_size=[left, right + pad_w, top,
                                       bottom + pad_h]))
            padded.append(image)
        return padded

    def test_step(self, data: dict) -> list:
        """Pad every view, then mmseg's test-time augmentation.

        Args:
            data: ``inputs`` and ``data_samples``, each a list over the views
                of lists over the batch, as the ``TestTimeAug`` pipeline
                gives them.

        Returns:
            The merged predictions, one ``SegDataSample`` per image.
        """
        data = dict(data)
        data['inputs'] = [
            self._pad(images, samples)
            for images, samples in zip(data['inputs'], data['data_samples'])
        ]
        return super().test_step(data)
