"""The linear video classification head of EVA-01, initialised as EVA does.

The official video model (``EVA-01/video/models/beit.py:453-466``) draws its
new classifier from a normal of std 0.02 (timm ``trunc_normal_``, cut at
+-2, i.e. untruncated at that std) with zero bias, and then multiplies both
by ``init_scale = 0.001`` (``beit.py:400, 464-466``): the head starts close
to zero, so the first updates do not push large random logits through a
pre-trained backbone. mmaction2's ``TimeSformerHead`` (a dropout and one
linear layer on the pooled features, which is the official head) stops at
std 0.02; this head adds the scaling.
"""
from mmaction.models.heads import TimeSformerHead

from eva_mm.registry import MODELS


@MODELS.register_module()
class VideoLinearHead(TimeSformerHead):
    """``TimeSformerHead`` whose initial weights are scaled by ``init_scale``.

    Args:
        num_classes: Number of classes.
        in_channels: Width of the pooled backbone features.
        init_scale: Factor applied to the initial weight and bias, 0.001 in
            the official code. 1.0 gives mmaction2's initialisation.
        **kwargs: The rest of ``TimeSformerHead``'s arguments (``init_std``
            0.02, ``dropout_ratio``, ``label_smooth_eps``,
            ``average_clips``, ``loss_cls``).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 init_scale: float = 0.001,
                 **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        self.init_scale = init_scale

    def init_weights(self) -> None:
        """Draw the weights as mmaction2 does, then scale them."""
        super().init_weights()
        self.fc_cls.weight.data.mul_(self.init_scale)
        self.fc_cls.bias.data.mul_(self.init_scale)
