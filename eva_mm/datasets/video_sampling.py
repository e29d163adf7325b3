"""Frame sampling for mmaction2 pipelines as the official EVA-01 video code
samples (TSN: one frame per segment)."""
from types import ModuleType
from typing import Dict, Optional, Union

import numpy as np
from mmcv.transforms import BaseTransform

from eva_mm.registry import TRANSFORMS


@TRANSFORMS.register_module()
class TSNSample(BaseTransform):
    """One frame from each of ``clip_len`` equal segments, as EVA samples.

    The official EVA-01 video code samples with its ``SampleFrames``
    (``clip_len=1, num_clips=T``: TSN sampling, ``EVA-01/video/datasets/
    pipeline.py:2012-2106``, used at ``build.py:247-251, 303, 324-325``):

    - training: the video is cut into T segments of ``total // T`` frames
      (the remainder at the end is never drawn) and one random frame is
      taken from each;
    - validation (``test_mode=True``, one view): the middle frame of each of
      T segments of ``total / T`` frames;
    - the multi-view test (``test_mode=True, num_views=4``): four
      independent random draws of the training kind, concatenated
      (``SampleFrames(multiview=4)`` without ``test_mode``). With ``seed``
      set, the draws come from a generator created afresh from it for every
      video, so that every run tests the same views; without it (the
      official behaviour) they differ from run to run.

    mmaction2's ``SampleFrames`` draws the same training offsets but spaces
    test clips differently and returns T clips of one frame each;
    ``UniformSample`` spreads the remainder over the segments. This
    transform returns ``num_views`` clips of ``clip_len`` frames, the layout
    ``FormatShape(input_format='NCTHW')`` and the 3-D recognizers expect.

    Required keys: ``total_frames``, ``start_index``. Added keys:
    ``frame_inds``, ``clip_len``, ``frame_interval``, ``num_clips``.

    Args:
        clip_len: Frames per clip (T), one per segment.
        num_views: Clips per video. More than one is for testing only.
        test_mode: Validation/test sampling (see above).
        seed: Test only: seed of the random views, for a deterministic
            multi-view test. ``None`` draws from NumPy's global generator
            as the official code does.
    """

    def __init__(self,
                 clip_len: int,
                 num_views: int = 1,
                 test_mode: bool = False,
                 seed: Optional[int] = None) -> None:
        if clip_len < 1 or num_views < 1:
            raise ValueError(f'clip_len ({clip_len}) and num_views '
                             f'({num_views}) must be positive.')
        if num_views > 1 and not test_mode:
            raise ValueError('Several views per video are a test-time '
                             'sampling: set test_mode=True.')
        if seed is not None and not (test_mode and num_views > 1):
            raise ValueError('seed fixes the random views of a multi-view '
                             'test (test_mode=True, num_views > 1); the other '
                             'samplings are random (training) or fixed '
                             '(one test view) already.')
        self.clip_len = clip_len
        self.num_views = num_views
        self.test_mode = test_mode
        self.seed = seed

    def random_offsets(
            self,
            total_frames: int,
            rng: Union[np.random.Generator,
                       ModuleType] = np.random) -> np.ndarray:
        """One training draw: a frame from each segment (official rule).

        Args:
            total_frames: Frames in the video.
            rng: ``np.random`` (the global generator, as the official code
                and mmaction2 use, which mmengine seeds) or a Generator.

        Returns:
            ``clip_len`` frame indices, before wrapping and ``start_index``.
        """
        segment = total_frames // self.clip_len
        integers = rng.integers if isinstance(
            rng, np.random.Generator) else rng.randint
        if segment > 0:
            return (np.arange(self.clip_len) * segment +
                    integers(segment, size=self.clip_len))
        # Fewer frames than segments: indices spread evenly, with repeats.
        ratio = total_frames / self.clip_len
        return np.around(np.arange(self.clip_len) * ratio)

    def middle_offsets(self, total_frames: int) -> np.ndarray:
        """The middle frame of each of ``clip_len`` segments (validation).

        Args:
            total_frames: Frames in the video.

        Returns:
            ``clip_len`` frame indices, before wrapping and ``start_index``.
        """
        segment = total_frames / self.clip_len
        return (np.arange(self.clip_len) * segment + segment / 2).astype(
            np.int64)

    def transform(self, results: Dict) -> Dict:
        """Set ``frame_inds`` of ``num_views`` clips of ``clip_len`` frames.

        Args:
            results: The pipeline's result dict.

        Returns:
            ``results`` with the sampled indices.
        """
        total = results['total_frames']
        if total < 1:
            raise ValueError(f'The video has {total} frames.')
        if self.test_mode and self.num_views == 1:
            inds = self.middle_offsets(total)
        else:
            rng = np.random if self.seed is None else \
                np.random.default_rng(self.seed)
            inds = np.concatenate([
                self.random_offsets(total, rng) for _ in range(self.num_views)
            ])
        # 'loop' as in the official code: indices past the end wrap.
        inds = np.mod(inds.astype(np.int64), total)
        results['frame_inds'] = inds + results.get('start_index', 0)
        results['clip_len'] = self.clip_len
        results['frame_interval'] = None
        results['num_clips'] = self.num_views
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(clip_len={self.clip_len}, '
                f'num_views={self.num_views}, test_mode={self.test_mode}, '
                f'seed={self.seed})')
