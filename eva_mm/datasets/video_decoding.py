"""Video decoding with decord and an OpenCV fallback.

``eva_mm.VideoInit`` + ``eva_mm.VideoDecode`` replace mmaction2's
``DecordInit`` + ``DecordDecode`` pair in a pipeline: decord is tried first
and OpenCV takes over when decord is not installed or fails on a file (decord
0.6 fails, for one, on frames whose width is not a multiple of 32 with some
FFmpeg builds). A video that neither can read raises
:class:`VideoReadError`; ``eva_mm.UnreadableDataHook`` then skips it in
training and names it in evaluation, as for every other data file
(:mod:`eva_mm.datasets.unreadable`).
"""
from typing import Dict, Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from eva_mm.registry import TRANSFORMS

BACKENDS = ('auto', 'decord', 'opencv')


class VideoReadError(RuntimeError):
    """A video that cannot be opened or decoded by any allowed backend."""


class OpenCVReader:
    """Frame access by index with OpenCV only.

    Frames are decoded sequentially up to the largest requested index,
    because ``CAP_PROP_POS_FRAMES`` seeking is inexact for many codecs.

    Args:
        filename: The video file.
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        capture = cv2.VideoCapture(filename)
        opened = capture.isOpened()
        self.num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(capture.get(cv2.CAP_PROP_FPS))
        capture.release()
        if not opened or self.num_frames <= 0:
            raise VideoReadError(f'OpenCV cannot open {filename!r}.')

    def __len__(self) -> int:
        return self.num_frames

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at ``indices`` as (N, H, W, 3) RGB uint8."""
        wanted = sorted(set(int(i) for i in indices))
        frames: Dict[int, np.ndarray] = {}
        capture = cv2.VideoCapture(self.filename)
        try:
            for index in range(wanted[-1] + 1):
                ok, frame = capture.read()
                if not ok:
                    raise VideoReadError(
                        f'OpenCV read only {index} of the {self.num_frames} '
                        f'frames of {self.filename!r}.')
                if index in wanted:
                    frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
        return np.stack([frames[int(i)] for i in indices])


class DecordReader:
    """decord's ``VideoReader`` behind the same interface as OpenCVReader.

    Args:
        filename: The video file.
        num_threads: decord decoding threads.
    """

    def __init__(self, filename: str, num_threads: int = 1) -> None:
        import decord
        self.filename = filename
        try:
            self.reader = decord.VideoReader(filename, num_threads=num_threads)
        except Exception as error:  # decord raises bare RuntimeErrors
            raise VideoReadError(
                f'decord cannot open {filename!r}: {error}') from error
        self.num_frames = len(self.reader)
        self.fps = float(self.reader.get_avg_fps())
        if self.num_frames <= 0:
            raise VideoReadError(f'decord finds no frames in {filename!r}.')

    def __len__(self) -> int:
        return self.num_frames

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at ``indices`` as (N, H, W, 3) RGB uint8."""
        try:
            return self.reader.get_batch(list(indices)).asnumpy()
        except Exception as error:
            raise VideoReadError(
                f'decord cannot decode {self.filename!r}: {error}') from error


class FallbackReader:
    """decord first; OpenCV when decord cannot open or decode the file.

    Args:
        filename: The video file.
        backend: ``'auto'`` (decord, then OpenCV), ``'decord'`` or
            ``'opencv'``.
        num_threads: decord decoding threads.
    """

    def __init__(self,
                 filename: str,
                 backend: str = 'auto',
                 num_threads: int = 1) -> None:
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got '
                             f'{backend!r}.')
        self.filename = filename
        self.backend = backend
        self.reader = self._open(num_threads)

    def _open(self, num_threads: int):
        if self.backend == 'opencv':
            return OpenCVReader(self.filename)
        try:
            return DecordReader(self.filename, num_threads)
        except (ImportError, VideoReadError):
            if self.backend == 'decord':
                raise
        return OpenCVReader(self.filename)

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def fps(self) -> float:
        """Average frames per second reported by the container."""
        return self.reader.fps

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at ``indices``; fall back to OpenCV on error."""
        try:
            return self.reader.get_batch(indices)
        except VideoReadError:
            if self.backend != 'auto' or isinstance(self.reader,
                                                    OpenCVReader):
                raise
        self.reader = OpenCVReader(self.filename)
        return self.reader.get_batch(indices)


@TRANSFORMS.register_module()
class VideoInit(BaseTransform):
    """Open a video with decord, falling back to OpenCV.

    Required keys: ``filename``. Added keys: ``video_reader``,
    ``total_frames``, ``avg_fps``.

    Args:
        backend: ``'auto'`` (decord, then OpenCV), ``'decord'`` or
            ``'opencv'``.
        num_threads: decord decoding threads.
    """

    def __init__(self, backend: str = 'auto', num_threads: int = 1) -> None:
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got '
                             f'{backend!r}.')
        self.backend = backend
        self.num_threads = num_threads

    def transform(self, results: dict) -> dict:
        """Open ``results['filename']``; raises :class:`VideoReadError`."""
        reader = FallbackReader(results['filename'], self.backend,
                                self.num_threads)
        results['video_reader'] = reader
        results['total_frames'] = len(reader)
        results['avg_fps'] = reader.fps
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(backend={self.backend!r}, '
                f'num_threads={self.num_threads})')


@TRANSFORMS.register_module()
class VideoDecode(BaseTransform):
    """Decode the sampled ``frame_inds`` of a :class:`VideoInit` reader.

    Required keys: ``video_reader``, ``frame_inds``. Added keys: ``imgs``
    (list of RGB frames), ``original_shape``, ``img_shape``; the reader is
    removed so that it is not collated.
    """

    def transform(self, results: dict) -> dict:
        """Decode the frames; raises :class:`VideoReadError`."""
        indices = np.asarray(results['frame_inds']).reshape(-1)
        frames = results.pop('video_reader').get_batch(indices.tolist())
        results['imgs'] = list(frames)
        results['original_shape'] = frames.shape[1:3]
        results['img_shape'] = frames.shape[1:3]
        return results
