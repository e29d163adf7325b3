"""mmseg's EncoderDecoder with sliding-window inference that works for
Mask2Former."""
from typing import List

from mmseg.models.segmentors import EncoderDecoder
from torch import Tensor

from eva_mm.registry import MODELS


@MODELS.register_module()
class Mask2FormerEncoderDecoder(EncoderDecoder):
    """An ``EncoderDecoder`` whose logits always match the input they come
    from, as sliding-window inference needs.

    mmseg 1.2.2's ``Mask2FormerHead.predict`` upsamples its masks to the
    image's ``pad_shape`` when the meta has one (any padding or
    ``ResizeToMultiple`` sets it), while ``slide_inference`` only changes
    ``img_shape`` to the window's; the window's logits then come out at the
    whole image's size and fail to paste (open-mmlab/mmsegmentation PR
    #3752, unmerged). Here every forward gets ``pad_shape`` set to the size
    of the tensor it decodes, which is what both ``'whole'`` (the padded
    batch) and ``'slide'`` (the window) inference need. Everything else is
    mmseg's ``EncoderDecoder``; it takes the same arguments.
    """

    def encode_decode(self, inputs: Tensor,
                      batch_img_metas: List[dict]) -> Tensor:
        """Decode ``inputs`` into logits of their own spatial size.

        Args:
            inputs: Images or windows, (N, C, H, W).
            batch_img_metas: Their meta information; not modified.

        Returns:
            Segmentation logits, (N, num_classes, H, W).
        """
        metas = [
            dict(meta, pad_shape=tuple(inputs.shape[2:]))
            for meta in batch_img_metas
        ]
        return super().encode_decode(inputs, metas)
