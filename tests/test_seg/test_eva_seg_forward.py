"""The official EVA-01 segmentation forward, checked by hand computations.

- The adapter's cls token enters the blocks without position embedding
  (official ``beit_adapter.py:104-110``).
- The semantic map is softmax(classes) x sigmoid(masks) at the 1/4
  resolution of the mask features, then resized bilinearly
  (``mask2former_head.py:576-578``, ``encoder_decoder_mask2former.py:75``).
- The multi-scale test pads each small view with raw value 0 to the window
  size before normalisation and cuts the padding off the result
  (``PadShortSide``, ``encoder_decoder_mask2former_aug.py:192-196``).
"""
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

import eva_mm  # noqa: F401  (registers eva_mm.*)
from eva_mm.models import EVAViTAdapter

DEMO = (Path(__file__).resolve().parents[2] /
        'configs/segmentation/demo/eva-demo-p8_vit-adapter_mask2former_'
        'ade-shapes.py')


pytestmark = pytest.mark.registry_scope('mmseg')


def randomise_(model: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere, so that no zero init hides a wiring."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(
                torch.randn(param.shape, generator=generator) * 0.2)


def tiny_adapter() -> EVAViTAdapter:
    adapter = EVAViTAdapter(
        arch=dict(embed_dims=32, num_layers=4, num_heads=2,
                  mlp_hidden_dim=64),
        img_size=64, patch_size=16, conv_inplane=8, deform_num_heads=2,
        norm_cfg=dict(type='BN'))
    return adapter.eval()


def test_cls_token_enters_without_position_embedding() -> None:
    torch.manual_seed(0)
    adapter = tiny_adapter()
    randomise_(adapter)
    with torch.no_grad():
        # The injectors' layer scale at 0 (its init): block 0 then sees the
        # embeddings themselves.
        for interaction in adapter.interactions:
            interaction.injector.gamma.zero_()
    seen: List[torch.Tensor] = []
    adapter.blocks[0].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone()))
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = adapter(image)
    tokens = seen[0]
    # By hand: the patch embedding as a matrix product over 16x16 patches
    # (row-major), plus the patch positions pos_embed[:, 1:]; the cls token
    # is the parameter itself.
    patches = image.reshape(1, 3, 4, 16, 4, 16).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(1, 16, 3 * 16 * 16)
    kernel = adapter.patch_embed.proj.weight.reshape(32, -1)
    expected = patches @ kernel.T + adapter.patch_embed.proj.bias
    expected = expected + adapter.pos_embed[:, 1:]
    torch.testing.assert_close(tokens[:, 1:], expected, rtol=1e-5,
                               atol=1e-5)
    assert torch.equal(tokens[:, 0], adapter.cls_token[:, 0])
    # The cls position is not used at all.
    with torch.no_grad():
        adapter.pos_embed[:, 0] += 5.
        again = adapter(image)
    for a, b in zip(out, again):
        assert torch.equal(a, b)


def build_demo_segmentor(**overrides) -> torch.nn.Module:
    cfg = Config.fromfile(str(DEMO))
    cfg.model.update(overrides)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    randomise_(model, seed=1)
    return model.eval()


def bilinear_by_hand(low: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize (half-pixel centres, edges clamped) of (C, h, w)."""

    def weights(out: int, inp: int) -> Tuple[np.ndarray, np.ndarray,
                                              np.ndarray]:
        src = np.maximum((np.arange(out) + 0.5) * inp / out - 0.5, 0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, inp - 1)
        return lo, hi, src - lo

    y0, y1, wy = weights(size[0], low.shape[1])
    x0, x1, wx = weights(size[1], low.shape[2])
    rows = low[:, y0] * (1 - wy)[None, :, None] + low[:, y1] * wy[None, :,
                                                                  None]
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx


def test_semantic_map_at_quarter_resolution() -> None:
    model = build_demo_segmentor(semantic_at_mask_resolution=True)
    image = torch.randn(1, 3, 64, 64)
    meta = [dict(img_shape=(64, 64), ori_shape=(64, 64))]
    with torch.no_grad():
        logits = model.encode_decode(image, meta)
        cls_logits, mask_logits = model.decode_head(
            model.extract_feat(image), [SegDataSample(metainfo=meta[0])])
    cls = cls_logits[-1][0].double().numpy()  # (queries, classes + 1)
    masks = mask_logits[-1][0].double().numpy()  # (queries, 16, 16)
    assert masks.shape[-2:] == (16, 16)  # the 1/4 mask features
    scores = np.exp(cls - cls.max(-1, keepdims=True))
    scores = (scores / scores.sum(-1, keepdims=True))[:, :-1]
    probs = 1 / (1 + np.exp(-masks))
    low = np.tensordot(scores, probs, axes=([0], [0]))  # (classes, 16, 16)
    expected = bilinear_by_hand(low, (64, 64))
    assert logits.shape == (1, 150, 64, 64)
    np.testing.assert_allclose(logits[0].numpy(), expected, rtol=1e-4,
                               atol=1e-5)
    # mmseg 1.2.2 (upsampling the mask logits first) gives other numbers,
    # far outside the tolerance above.
    model.semantic_at_mask_resolution = False
    with torch.no_grad():
        mmseg_logits = model.encode_decode(image, meta)
    assert (mmseg_logits - logits).abs().max() > 1e-4


def test_padded_tta_windows() -> None:
    """Views smaller than the 64 px window are padded with raw 0 before
    normalisation; every window is 64 x 64; the padding's prediction is
    cut off."""
    segmentor = build_demo_segmentor(semantic_at_mask_resolution=True)
    cfg = Config.fromfile(str(DEMO))
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    tta = MODELS.build(dict(cfg.tta_model, module=segmentor))
    assert type(tta).__name__ == 'PadShortSideSegTTAModel' and tta.size == 64
    windows: List[torch.Tensor] = []
    segmentor.backbone.register_forward_pre_hook(
        lambda module, args: windows.append(args[0].detach().clone()))
    generator = torch.Generator().manual_seed(2)
    raw = torch.randint(0, 256, (3, 32, 96), generator=generator,
                        dtype=torch.uint8)
    meta = dict(ori_shape=(32, 96), img_shape=(32, 96), flip=False,
                img_path='view.png')
    sample = SegDataSample(metainfo=dict(meta))
    # SegTTAModel carries the ground truth over to the merged sample.
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 32, 96))
    data = dict(inputs=[[raw]], data_samples=[[sample]])
    with torch.no_grad():
        merged = tta.test_step(data)[0]
    # Windows of 64 x 64 (stride 32 over the padded 64 x 96 view: 2).
    assert [tuple(w.shape) for w in windows] == [(1, 3, 64, 64)] * 2
    # Rows 32..63 are the padding: raw 0 normalised, (0 - mean) / std, per
    # channel (RGB after the BGR swap).
    mean = torch.tensor([123.675, 116.28, 103.53])
    std = torch.tensor([58.395, 57.12, 57.375])
    pad = windows[0][0, :, 32:, :]
    expected_pad = (-mean / std)[:, None, None].expand_as(pad)
    torch.testing.assert_close(pad, expected_pad)
    # The image part is the normalised image (channels swapped).
    image = (raw.flip(0).float() - mean[:, None, None]) / std[:, None, None]
    torch.testing.assert_close(windows[0][0, :, :32], image[:, :, :64])
    # By hand: windows over the padded image, averaged where they overlap,
    # cut to the 32 x 96 image, softmax over the classes, argmax.
    padded = torch.cat([image, expected_pad[:, :, :1].expand(3, 32, 96)],
                       dim=1)[None]
    with torch.no_grad():
        left = segmentor.encode_decode(padded[..., :64], [meta])
        right = segmentor.encode_decode(padded[..., 32:], [meta])
    total = torch.zeros(1, 150, 64, 96)
    total[..., :64] += left
    total[..., 32:] += right
    total[..., 32:64] /= 2
    expected = total[:, :, :32].softmax(1).argmax(1)
    assert merged.pred_sem_seg.data.shape == (1, 32, 96)
    assert torch.equal(merged.pred_sem_seg.data, expected)


def test_head_ffn_activation_checkpointing() -> None:
    """``head_ffn_with_cp``: every head FFN recomputes its layers in the
    backward pass (as the official with_cp=True), with the same names,
    outputs and gradients."""
    plain = build_demo_segmentor(head_ffn_with_cp=False).train()
    cp = build_demo_segmentor(head_ffn_with_cp=True).train()
    assert list(plain.state_dict()) == list(cp.state_dict())
    cp.load_state_dict(plain.state_dict())
    ffns = [m for m in cp.decode_head.modules() if type(m).__name__ == 'FFN']
    # 1 pixel-decoder layer + 2 decoder layers in the demo config.
    assert len(ffns) == 3
    assert all(
        type(f.layers).__name__ == 'CheckpointedSequential' for f in ffns)
    calls: List[int] = []
    first_linear = ffns[0].layers[0][0]
    first_linear.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 5, 32, requires_grad=True)
    plain_ffn = [
        m for m in plain.decode_head.modules() if type(m).__name__ == 'FFN'
    ][0]
    out_cp = ffns[0](x)
    out_cp.square().sum().backward()
    grad_cp = x.grad.clone()
    assert len(calls) == 2  # forward, and the recomputation in backward
    x.grad = None
    out_plain = plain_ffn(x)
    out_plain.square().sum().backward()
    torch.testing.assert_close(out_cp, out_plain)
    torch.testing.assert_close(grad_cp, x.grad)
    # At test time no checkpointing: one call.
    calls.clear()
    ffns[0].eval()
    with torch.no_grad():
        ffns[0](x)
    assert len(calls) == 1


def test_every_parameter_gets_a_gradient() -> None:
    """What DDP with find_unused_parameters=False (the official setting,
    now in the configs) needs: one training step reaches every trainable
    parameter."""
    model = build_demo_segmentor().train()
    generator = torch.Generator().manual_seed(3)
    image = torch.randint(0, 256, (3, 64, 64), generator=generator,
                          dtype=torch.uint8)
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[:, 10:40, 20:50] = 3
    labels[:, 45:, :] = 7
    sample = SegDataSample(metainfo=dict(img_shape=(64, 64),
                                         ori_shape=(64, 64),
                                         pad_shape=(64, 64)))
    sample.gt_sem_seg = PixelData(data=labels)
    batch = model.data_preprocessor(
        dict(inputs=[image], data_samples=[sample]), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    unused = [
        name for name, param in model.named_parameters()
        if param.requires_grad and param.grad is None
    ]
    assert unused == []
