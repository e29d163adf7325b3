"""The official EVA-01 video recipe in the configs: multi-scale crop, TSN
sampling, per-frame colour jitter, head initialisation and the K-722 lr
schedule, each checked against values computed by hand or by formula."""
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import PARAM_SCHEDULERS

from mmaction.registry import TRANSFORMS

from eva_mm.datasets import ColorJitter, TSNSample
from eva_mm.registry import MODELS

ROOT = Path(__file__).parents[2]
K722 = ROOT / 'configs/video/eva-g-p14_k722-intermediate-ft_8x224.py'
BASE_DATA = ROOT / 'configs/video/_base_/datasets/kinetics_16x224.py'

# The recipe's transforms and heads are mmaction2's: build them in its scope
# (an unscoped look-up goes to whichever scope an earlier test left newest).
pytestmark = pytest.mark.registry_scope('mmaction')


def _step(pipeline, name):
    return next(t for t in pipeline if t['type'] == name)


# ---------------------------------------------------------------- crop


def test_multi_scale_crop_makes_the_official_crop_sizes():
    cfg = Config.fromfile(str(BASE_DATA))
    crop = TRANSFORMS.build(_step(cfg.train_pipeline, 'MultiScaleCrop'))
    # A frame after Resize(-1, 256): short side 256, long side 340.
    img_h, img_w = 256, 340
    # By hand: int(256 x s) for s in (1, .875, .75, .66) is 256, 224, 192,
    # 168 (256 x .66 = 168.96); width and height scale levels at most one
    # apart (max_wh_scale_gap 1).
    sizes = [256, 224, 192, 168]
    expected = {(sizes[i], sizes[j])
                for i in range(4)
                for j in range(4) if abs(i - j) <= 1}
    assert len(expected) == 10
    seen_sizes, seen_boxes = set(), set()
    # mmaction2's MultiScaleCrop draws with Python's random, as the
    # official one does.
    random.seed(0)
    frame = np.zeros((img_h, img_w, 3), np.uint8)
    for _ in range(600):
        out = crop.transform(dict(imgs=[frame], img_shape=(img_h, img_w)))
        x1, y1, x2, y2 = (int(v) for v in out['crop_bbox'])
        w, h = x2 - x1, y2 - y1
        assert out['imgs'][0].shape[:2] == (h, w)
        seen_sizes.add((w, h))
        # One of five fixed places: corners and centre, on a grid of a
        # quarter of the slack.
        w_step, h_step = (img_w - w) // 4, (img_h - h) // 4
        assert (x1, y1) in {(0, 0), (4 * w_step, 0), (0, 4 * h_step),
                            (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)}
        seen_boxes.add((x1, y1, w, h))
    assert seen_sizes == expected
    assert len(seen_boxes) > 30
    # The crop is then resized to 224 x 224.
    resize = [t for t in cfg.train_pipeline if t['type'] == 'Resize']
    assert resize[0]['scale'] == (-1, 256)
    assert resize[1]['scale'] == (224, 224) and not resize[1]['keep_ratio']


# ---------------------------------------------------------------- sampling


def test_tsn_training_draws_one_frame_per_segment():
    # 10 frames, 4 segments of 10 // 4 = 2 frames: [0, 1], [2, 3], [4, 5],
    # [6, 7]; frames 8 and 9 are never drawn (official rule).
    sample = TSNSample(clip_len=4)
    np.random.seed(0)
    seen = [set() for _ in range(4)]
    for _ in range(200):
        out = sample.transform(dict(total_frames=10, start_index=0))
        assert out['clip_len'] == 4 and out['num_clips'] == 1
        for i, index in enumerate(out['frame_inds']):
            seen[i].add(int(index))
    assert seen == [{0, 1}, {2, 3}, {4, 5}, {6, 7}]


def test_tsn_middle_frames_and_short_videos():
    # Validation: segments of 10 / 4 = 2.5 frames, middles at 1.25, 3.75,
    # 6.25, 8.75 -> 1, 3, 6, 8.
    out = TSNSample(4, test_mode=True).transform(
        dict(total_frames=10, start_index=0))
    assert out['frame_inds'].tolist() == [1, 3, 6, 8]
    # start_index (1 for some frame folders) shifts every index.
    out = TSNSample(4, test_mode=True).transform(
        dict(total_frames=10, start_index=1))
    assert out['frame_inds'].tolist() == [2, 4, 7, 9]
    # Fewer frames than segments in training: 0, .75, 1.5, 2.25 rounded
    # half to even -> 0, 1, 2, 2.
    out = TSNSample(4).transform(dict(total_frames=3, start_index=0))
    assert out['frame_inds'].tolist() == [0, 1, 2, 2]


def test_four_view_test_is_four_random_tsn_draws():
    sample = TSNSample(clip_len=4, num_views=4, test_mode=True)
    np.random.seed(1)
    draws = []
    for _ in range(20):
        out = sample.transform(dict(total_frames=40, start_index=0))
        assert out['num_clips'] == 4 and out['clip_len'] == 4
        views = out['frame_inds'].reshape(4, 4)
        # Each view takes one frame of each 10-frame segment.
        assert ((views // 10) == np.arange(4)).all()
        draws.append(views)
    # The views of a video differ from each other and from run to run.
    assert any(len({tuple(v) for v in views}) > 1 for views in draws)
    assert len({d.tobytes() for d in draws}) > 1
    # With a seed the same views come back for every call (deterministic
    # test), still one frame per segment, and NumPy's global generator is
    # not touched.
    seeded = TSNSample(clip_len=4, num_views=4, test_mode=True, seed=0)
    state = np.random.get_state()[1].copy()
    first = seeded.transform(dict(total_frames=40, start_index=0))
    again = seeded.transform(dict(total_frames=40, start_index=0))
    np.testing.assert_array_equal(first['frame_inds'], again['frame_inds'])
    assert ((first['frame_inds'].reshape(4, 4) // 10) == np.arange(4)).all()
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_tsn_sample_rejects_training_views_and_useless_seeds():
    with pytest.raises(ValueError, match='test_mode=True'):
        TSNSample(4, num_views=4)
    with pytest.raises(ValueError, match='seed'):
        TSNSample(4, seed=0)


def test_configs_sample_as_the_official_code():
    cfg = Config.fromfile(str(K722))
    train = _step(cfg.train_pipeline, 'eva_mm.TSNSample')
    assert (train.clip_len, train.get('test_mode', False)) == (8, False)
    val = _step(cfg.val_pipeline, 'eva_mm.TSNSample')
    assert (val.clip_len, val.test_mode) == (8, True)
    assert _step(cfg.val_pipeline, 'Resize')['scale'] == (-1, 256)
    assert _step(cfg.val_pipeline, 'CenterCrop')['crop_size'] == 224
    test = _step(cfg.test_pipeline, 'eva_mm.TSNSample')
    assert (test.clip_len, test.num_views, test.test_mode) == (8, 4, True)
    assert 'seed' not in test
    # The deterministic variant is one --cfg-options away.
    cfg.merge_from_dict({'test_dataloader.dataset.pipeline.1.seed': 0})
    assert cfg.test_dataloader.dataset.pipeline[1].seed == 0


# ---------------------------------------------------------------- colour


def test_color_jitter_config_is_the_official_one():
    cfg = Config.fromfile(str(BASE_DATA))
    apply = _step(cfg.train_pipeline, 'RandomApply')
    assert apply.prob == 0.8
    jitter = TRANSFORMS.build(apply.transforms[0])
    assert isinstance(jitter, ColorJitter) and jitter.per_frame
    assert jitter.brightness == pytest.approx((0.6, 1.4))
    assert jitter.contrast == pytest.approx((0.6, 1.4))
    assert jitter.saturation == pytest.approx((0.8, 1.2))
    assert jitter.hue == pytest.approx((-0.1, 0.1))


def test_color_jitter_draws_every_frame_independently():
    # Brightness only, on a flat gray clip: each output frame is flat and
    # its value / 100 is that frame's brightness factor.
    jitter = ColorJitter(brightness=0.4,
                         contrast=0,
                         saturation=0,
                         hue=0,
                         per_frame=True)
    frame = np.full((4, 4, 3), 100, np.uint8)
    np.random.seed(3)
    factors = []
    for _ in range(1500):
        out = jitter.transform(dict(imgs=[frame, frame]))['imgs']
        assert all((img == img[0, 0, 0]).all() for img in out)
        factors.append([img[0, 0, 0] / 100 for img in out])
    factors = np.array(factors)
    # Uniform on [0.6, 1.4] (to the rounding of 100 x factor): mean 1,
    # standard deviation 0.8 / sqrt(12) = 0.231.
    assert factors.min() >= 0.6 and factors.max() <= 1.4
    assert factors.mean() == pytest.approx(1.0, abs=0.02)
    assert factors.std() == pytest.approx(0.8 / math.sqrt(12), rel=0.05)
    # Two frames of a clip: different draws, uncorrelated (|r| < 0.08 with
    # 1500 clips, about 3 standard errors).
    assert (factors[:, 0] != factors[:, 1]).mean() > 0.9
    assert abs(np.corrcoef(factors[:, 0], factors[:, 1])[0, 1]) < 0.08
    # mmaction2's behaviour (per_frame=False): one draw for the clip.
    clip_wise = ColorJitter(brightness=0.4, contrast=0, saturation=0, hue=0)
    for _ in range(20):
        out = clip_wise.transform(dict(imgs=[frame, frame]))['imgs']
        np.testing.assert_array_equal(out[0], out[1])


def test_color_jitter_order_is_drawn_per_frame_and_clips_each_step():
    np.random.seed(4)
    jitter = ColorJitter(0.4, 0.4, 0.2, 0.1, per_frame=True)
    orders = {tuple(jitter.draw()[0]) for _ in range(300)}
    assert len(orders) == 24  # every permutation of the four adjustments
    # By hand: brightness x1.4 takes (200, 100, 0) to (255 clipped, 140, 0)
    # before saturation 0 replaces every channel by the BT.601 gray of the
    # clipped pixel, 0.2989 x 255 + 0.587 x 140 = 158.4 -> 158. Without the
    # clip in between the gray would be 0.2989 x 280 + 82.18 = 165.9.
    img = np.array([[[200, 100, 0]]], np.uint8)
    out = jitter.jitter(img, [0, 2, 1, 3], (1.4, 1.0, 0.0, 0.0))
    np.testing.assert_array_equal(out, np.full((1, 1, 3), 158, np.uint8))


# ---------------------------------------------------------------- head


def test_head_init_is_trunc_normal_002_times_0001():
    import eva_mm  # noqa: F401  (registers the eva_mm scope)
    cfg = Config.fromfile(str(K722))
    head_cfg = cfg.model.cls_head
    assert head_cfg.type == 'eva_mm.VideoLinearHead'
    assert (head_cfg.init_std, head_cfg.init_scale) == (0.02, 0.001)
    torch.manual_seed(0)
    head = MODELS.build(head_cfg)
    head.init_weights()
    weight, bias = head.fc_cls.weight.detach(), head.fc_cls.bias.detach()
    assert weight.shape == (722, 1408)
    # 1M draws of N(0, 0.02) scaled by 0.001: std 2e-5 within 1 %, mean
    # within 5 standard errors of 0, nothing beyond 6 std.
    std = 0.02 * 0.001
    assert weight.std().item() == pytest.approx(std, rel=0.01)
    assert abs(weight.mean().item()) < 5 * std / math.sqrt(weight.numel())
    assert weight.abs().max().item() < 6 * std
    assert torch.count_nonzero(bias) == 0
    # The same draws as mmaction2's TimeSformerHead, times 0.001.
    from mmaction.models.heads import TimeSformerHead
    torch.manual_seed(0)
    stock = TimeSformerHead(722, 1408, init_std=0.02)
    stock.init_weights()
    torch.testing.assert_close(weight,
                               stock.fc_cls.weight.detach() * 0.001,
                               rtol=0,
                               atol=0)


# ---------------------------------------------------------------- schedule


def test_k722_schedule_warms_up_from_zero_and_ends_at_lr_over_100():
    cfg = Config.fromfile(str(K722))
    base = cfg.optim_wrapper.optimizer.lr
    assert base == 8e-6
    epoch_length, epochs, warmup = 10, cfg.train_cfg.max_epochs, 5
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=base)
    wrapper = OptimWrapper(optimizer)
    schedulers = [
        PARAM_SCHEDULERS.build(
            dict(s, optimizer=wrapper, epoch_length=epoch_length))
        for s in cfg.param_scheduler
    ]
    total = epochs * epoch_length
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]['lr'])
        for scheduler in schedulers:
            scheduler.step()
    warm = warmup * epoch_length

    def official(k: int) -> float:
        # timm CosineLRScheduler with warmup_prefix as set up by
        # EVA-01/video/utils/optimizer.py:150-162: linear from 0, then a
        # cosine from lr to lr / 100 over the remaining iterations.
        if k < warm:
            return base * k / warm
        lr_min = base / 100
        return lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi *
                                                              (k - warm) /
                                                              (total - warm)))

    # Warm-up: mmengine's LinearLR spans end - begin - 1 steps, so it reaches
    # lr one iteration before timm does; off by at most lr / (warm - 1).
    for k in (0, 1, warm // 2, warm - 1):
        assert abs(lrs[k] - official(k)) <= base / (warm - 1) + 1e-15, k
    assert lrs[0] < base * 1e-8
    # Cosine: the official values.
    for k in (warm, warm + 1, (warm + total) // 2, total - 1):
        assert lrs[k] == pytest.approx(official(k), rel=1e-6), k
    assert lrs[warm] == pytest.approx(base)
    # The last iteration, one step short of the end, is within 1 % of
    # lr / 100 (by the formula: 0.2 % above it with 350 cosine steps).
    assert lrs[-1] == pytest.approx(base / 100, rel=0.01)


# ---------------------------------------------------------------- pipelines


def test_paper_pipelines_run_on_a_video(tmp_path):
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope

    from .moving_shapes import write_video

    import eva_mm  # noqa: F401  (registers the eva_mm scope)
    init_default_scope('mmaction')
    # 40 random frames of 80 x 64 px: short side 64, resized to 256 / 224.
    rng = np.random.default_rng(0)
    video = tmp_path / 'clip.mp4'
    write_video(
        video,
        [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(40)])
    cfg = Config.fromfile(str(BASE_DATA))
    np.random.seed(5)
    random.seed(5)
    for name, views in (('train_pipeline', 1), ('val_pipeline', 1),
                        ('test_pipeline', 12)):
        pipeline = Compose(cfg[name])
        packed = pipeline(
            dict(filename=str(video), label=0, start_index=0, modality='RGB'))
        # views x (C, T, H, W): 4 random TSN draws x 3 crops in the test.
        assert packed['inputs'].shape == (views, 3, 16, 224, 224), name
