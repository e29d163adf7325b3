"""The video EVAViT: inflation of an image model, frame-count resizing."""
import pytest
import torch

from eva_mm.models import EVAViT

TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_hidden_dim=64)


def _image_model(**kwargs) -> EVAViT:
    torch.manual_seed(0)
    return EVAViT(arch=TINY, img_size=32, patch_size=8, **kwargs).eval()


def _video_model(**kwargs) -> EVAViT:
    torch.manual_seed(1)
    return EVAViT(arch=TINY, img_size=32, patch_size=8, **kwargs).eval()


@pytest.mark.parametrize('tubelet_size', [1, 2])
def test_identical_frames_embed_as_the_image(tubelet_size):
    image = _image_model()
    video = _video_model(num_frames=4, tubelet_size=tubelet_size)
    video.load_state_dict(image.state_dict())
    frame = torch.randn(2, 3, 32, 32)
    clip = frame.unsqueeze(2).repeat(1, 1, 4, 1, 1)
    with torch.no_grad():
        image_tokens, image_grid = image.embed(frame)
        video_tokens, video_grid = video.embed(clip)
    frames = 4 // tubelet_size
    assert video_grid == (frames, *image_grid)
    # cls then the tokens of each token frame, each equal to the image's.
    torch.testing.assert_close(video_tokens[:, :1], image_tokens[:, :1])
    per_frame = video_tokens[:, 1:].reshape(2, frames, -1, 32)
    for t in range(frames):
        torch.testing.assert_close(
            per_frame[:, t], image_tokens[:, 1:], rtol=1e-5, atol=1e-5)


def test_identical_frames_give_the_image_features():
    # Without cls every key appears T times, so joint attention weighs them
    # exactly as the image model does (with cls, the single cls key would be
    # diluted T-fold).
    kwargs = dict(with_cls_token=False, out_type='featmap')
    image = _image_model(**kwargs)
    video = _video_model(num_frames=4, **kwargs)
    video.load_state_dict(image.state_dict())
    frame = torch.randn(2, 3, 32, 32)
    clip = frame.unsqueeze(2).repeat(1, 1, 4, 1, 1)
    with torch.no_grad():
        expected = image(frame)[0]
        got = video(clip)[0]
    assert got.shape == (2, 32, 4, 4, 4)
    for t in range(4):
        torch.testing.assert_close(got[:, :, t], expected, rtol=1e-4,
                                   atol=1e-5)


def test_image_checkpoint_inflates_on_load(tmp_path):
    image = _image_model()
    path = tmp_path / 'image.pth'
    torch.save(dict(state_dict=image.state_dict()), path)
    video = _video_model(
        num_frames=4,
        tubelet_size=2,
        temporal_pos_embed=True,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    video.init_weights()
    kernel = image.patch_embed.proj.weight
    got = video.patch_embed.proj.weight
    assert got.shape == (32, 3, 2, 8, 8)
    for t in range(2):
        torch.testing.assert_close(got[:, :, t], kernel / 2)
    # The spatial embedding is copied to both token frames.
    pos = image.pos_embed
    grid = video.pos_embed[:, 1:].reshape(1, 2, 16, 32)
    torch.testing.assert_close(video.pos_embed[:, :1], pos[:, :1])
    for t in range(2):
        torch.testing.assert_close(grid[:, t], pos[:, 1:])
    torch.testing.assert_close(video.blocks[1].attn.qkv.weight,
                               image.blocks[1].attn.qkv.weight)


def _linear_upsample_2x(values: torch.Tensor) -> torch.Tensor:
    """Half-pixel linear 2x upsampling along dim 0, written out by hand.

    Output sample 2i + 1/2 +- 1/4 lies a quarter step from input i towards
    its neighbour (clamped at the ends).
    """
    n = values.shape[0]
    out = []
    for i in range(n):
        before = values[max(i - 1, 0)]
        after = values[min(i + 1, n - 1)]
        out.append(0.75 * values[i] + 0.25 * before)
        out.append(0.75 * values[i] + 0.25 * after)
    return torch.stack(out)


def test_space_time_pos_embed_8_to_16_frames():
    eight = _video_model(num_frames=8, temporal_pos_embed=True)
    sixteen = _video_model(num_frames=16, temporal_pos_embed=True)
    assert eight.pos_embed.shape == (1, 1 + 8 * 16, 32)
    sixteen.load_state_dict(eight.state_dict())
    grid8 = eight.pos_embed[0, 1:].reshape(8, 16, 32)
    expected = _linear_upsample_2x(grid8).reshape(1, 16 * 16, 32)
    torch.testing.assert_close(sixteen.pos_embed[:, 1:], expected)
    torch.testing.assert_close(sixteen.pos_embed[:, :1],
                               eight.pos_embed[:, :1])
    # The 8-frame model run on 16 frames resizes the same way at run time.
    clip = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(eight(clip), sixteen(clip))


def test_spatial_pos_embed_is_tiled_for_any_frame_count():
    model = _video_model(num_frames=8, out_type='raw')
    assert model.pos_embed.shape == (1, 17, 32)
    with torch.no_grad():
        tokens, grid = model.embed(torch.zeros(1, 3, 16, 32, 32))
        patch_only = model.patch_embed(torch.zeros(1, 3, 16, 32, 32))[0]
    assert grid == (16, 4, 4)
    # Zero input: the tokens are the conv bias plus the tiled embedding.
    pos = (tokens[:, 1:] - patch_only).reshape(16, 16, 32)
    for t in range(16):
        torch.testing.assert_close(pos[t], model.pos_embed[0, 1:])


def test_video_mean_pooling_and_single_tensor_output():
    model = _video_model(
        num_frames=4,
        out_type='avg_featmap',
        use_fc_norm=True,
        final_norm=False,
        tuple_output=False)
    clip = torch.randn(3, 3, 4, 32, 32)
    with torch.no_grad():
        pooled = model(clip)
        tokens = model.forward_features(clip)
    assert pooled.shape == (3, 32)
    torch.testing.assert_close(pooled,
                               model.fc_norm(tokens[:, 1:].mean(dim=1)))


def test_video_input_errors():
    model = _video_model(num_frames=4, tubelet_size=2)
    with pytest.raises(ValueError, match='5-D'):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match='tubelet size'):
        model(torch.zeros(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match='window attention'):
        _video_model(num_frames=4, window_size=2)


@pytest.mark.parametrize('fp32', [False, True])
def test_fp32_islands_under_autocast(fp32, monkeypatch):
    """EVA-01's video model under mixed precision: q.k^T and the softmax in
    fp32 (qk_float, EVA-01/video/models/beit.py:183-186), LayerNorms in fp32
    (LayerNormWithForceFP32, :44-72), the rest in bf16."""
    import torch.nn.functional as F

    from eva_mm.models.layers import attention
    attention_dtypes = []
    sdpa = attention.scaled_dot_product_attention

    def recorded(q, k, v, **kwargs):
        attention_dtypes.append((q.dtype, k.dtype, v.dtype))
        return sdpa(q, k, v, **kwargs)

    # What reaches attention, whichever path it then takes (the fused call
    # or, for small 16-bit calls on the CPU, the formula).
    monkeypatch.setattr(attention, 'scaled_dot_product_attention', recorded)
    video = _video_model(num_frames=4, fp32_norm=fp32,
                         fp32_attention=fp32).bfloat16()
    norm_outputs = []
    video.blocks[0].norm1.register_forward_hook(
        lambda module, args, out: norm_outputs.append((args[0], out)))
    with torch.autocast('cpu', torch.bfloat16):
        out = video(torch.randn(1, 3, 4, 32, 32, dtype=torch.bfloat16))
    assert out[0].dtype == torch.bfloat16
    want = torch.float32 if fp32 else torch.bfloat16
    assert attention_dtypes == [(want, ) * 3] * 2
    # The bf16 model's norm is the official fp32 one rounded once; PyTorch's
    # bf16 LayerNorm accumulates in fp32 too, so both settings give it.
    x, normed = norm_outputs[0]
    norm = video.blocks[0].norm1
    in_fp32 = F.layer_norm(x.float(), norm.normalized_shape,
                           norm.weight.float(), norm.bias.float(),
                           norm.eps).bfloat16()
    assert normed.dtype == torch.bfloat16
    assert torch.equal(normed, in_fp32)
