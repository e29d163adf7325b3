"""A tiny EVA CLIP for open_clip: a timm EVA-01 tower and a small text
tower, registered in timm under a name of its own on import."""
from timm.models import build_model_with_cfg, register_model
from timm.models.eva import Eva

# The same tower, as EVAViT and as timm's Eva.
EVA_ARCH = dict(
    embed_dims=32, num_layers=2, num_heads=2, mlp_hidden_dim=64,
    patch_size=8)
IMG_SIZE, EMBED_DIM = 32, 16
TIMM_NAME = 'eva_mm_test_tiny_patch8_32'
CLIP_NAME = 'eva-mm-test-tiny-eva-clip'


@register_model
def eva_mm_test_tiny_patch8_32(pretrained: bool = False, **kwargs) -> Eva:
    """EVA-01 tiny enough for CPU tests (open_clip passes the head size and
    the pooling)."""
    return build_model_with_cfg(
        Eva,
        'eva_mm_test_tiny_patch8_32',
        pretrained,
        img_size=IMG_SIZE,
        patch_size=EVA_ARCH['patch_size'],
        embed_dim=EVA_ARCH['embed_dims'],
        depth=EVA_ARCH['num_layers'],
        num_heads=EVA_ARCH['num_heads'],
        mlp_ratio=EVA_ARCH['mlp_hidden_dim'] / EVA_ARCH['embed_dims'],
        **kwargs)


def tiny_clip_config(text_width: int = 32) -> dict:
    """open_clip's EVA01-g-14 config at test size."""
    return dict(
        embed_dim=EMBED_DIM,
        vision_cfg=dict(
            image_size=IMG_SIZE,
            timm_model_name=TIMM_NAME,
            timm_model_pretrained=False,
            timm_pool='token',
            timm_proj=None),
        text_cfg=dict(
            context_length=77,
            vocab_size=49408,
            width=text_width,
            heads=2,
            layers=1),
        custom_text=True)
