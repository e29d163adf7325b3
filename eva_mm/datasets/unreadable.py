"""Unreadable data files: skipped in training, named in evaluation.

One mechanism for every task's datasets (detection, LVIS, segmentation
images and label maps, classification, MIM, video). ``eva_mm.
UnreadableDataHook`` (:mod:`eva_mm.engine.hooks.unreadable_data`) puts each
dataset's transforms in a :class:`GuardedPipeline`, which tells a file that
cannot be read (an error raised by a loading transform) from any other
failure:

- in training it returns ``None``, so that mmengine's
  ``BaseDataset.__getitem__`` draws another index in its place (the sampler's
  epoch keeps its length and order), and it hands the file and the reason to
  the next sample it returns, in that sample's metainfo. The pipeline runs in
  DataLoader worker processes; the sample is what reaches the main process,
  where the hook counts, logs and enforces the limits. detectron2, the
  official EVA-01 detection code, refetches the same way when its mapper
  returns None (EVA-01/det/detectron2/data/common.py:54-98), but its mapper
  raises on an unreadable image, which stops the run;
- in evaluation it raises :class:`UnreadableDataError` naming the file: a
  skipped image would change the metric.

:func:`check_header` is the cheap check of every listed file that the hook
runs before evaluation; :func:`decode` is the full decode of
tools/analysis/check_dataset.py.
"""
import os
import os.path as osp
from typing import Iterable, List, Optional, Sequence, Tuple

import cv2
from mmaction.datasets.transforms import (DecordDecode, DecordInit,
                                          LoadRGBFromFile, OpenCVDecode,
                                          OpenCVInit, PIMSDecode, PIMSInit,
                                          PyAVDecode, PyAVInit,
                                          RawFrameDecode)
from mmcv.transforms import LoadAnnotations, LoadImageFromFile
from mmengine.dataset import Compose
from mmengine.structures import BaseDataElement
from PIL import Image, UnidentifiedImageError

from .video_decoding import (FallbackReader, OpenCVReader, VideoDecode,
                             VideoInit)

# The metainfo key of a sample that carries the files skipped before it.
SKIPPED_KEY = 'skipped_files'
# Where the datasets of the toolboxes keep a sample's files: images
# (mmdet, mmseg, mmpretrain), label maps (mmseg, mmdet panoptic), videos
# (mmaction2).
FILE_KEYS = ('img_path', 'seg_map_path', 'filename')
VIDEO_SUFFIXES = ('.3gp', '.avi', '.flv', '.m4v', '.mkv', '.mov', '.mp4',
                  '.mpeg', '.mpg', '.webm', '.wmv')
# Transforms that read a sample's files; an error raised by one of them is
# the file's fault. mmdet's and mmseg's loaders subclass mmcv's two;
# LoadAnnotations reads a file only for a sample with a label map
# (``seg_map_path``), otherwise its errors are the annotations' or the
# code's (:func:`_reads_a_file`).
IMAGE_READERS = (LoadImageFromFile, LoadAnnotations)
VIDEO_READERS = (VideoInit, VideoDecode, DecordInit, DecordDecode,
                 OpenCVInit, OpenCVDecode, PyAVInit, PyAVDecode, PIMSInit,
                 PIMSDecode, RawFrameDecode, LoadRGBFromFile)
READERS = IMAGE_READERS + VIDEO_READERS
# EXIF orientations that turn the image by 90 degrees: cv2 (mmcv's default
# decoder) and detectron2's reader apply them, so width and height swap.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


class UnreadableDataError(RuntimeError):
    """Data files that cannot be read, named with the reasons."""


def format_files(entries: Iterable[dict], limit: int = 50) -> str:
    """One line per file: ``path: reason``, at most ``limit`` lines.

    Args:
        entries: Dicts with ``path`` and ``reason``.
        limit: Lines to write before summarising the rest as a count.

    Returns:
        The lines, joined.
    """
    entries = list(entries)
    lines = [f'  {e["path"]}: {e["reason"]}' for e in entries[:limit]]
    if len(entries) > limit:
        lines.append(f'  ... and {len(entries) - limit} more')
    return '\n'.join(lines)


def listed_files(data_info: dict) -> List[str]:
    """The files a dataset's data-info dict names (image, label map, video).

    Args:
        data_info: One item of a dataset's data list.

    Returns:
        The paths, in ``FILE_KEYS`` order.
    """
    return [
        data_info[key] for key in FILE_KEYS
        if isinstance(data_info.get(key), str)
    ]


def is_video(path: str) -> bool:
    """Whether ``path`` names a video, by its suffix."""
    return osp.splitext(path)[1].lower() in VIDEO_SUFFIXES


def _error_text(error: BaseException) -> str:
    return f'{type(error).__name__}: {error}'


def check_header(path: str) -> Optional[str]:
    """Why ``path`` cannot be read, from its header only.

    Finds missing and empty files and files that are no image (or video)
    at all; a file truncated after a good header passes, and is found by
    :func:`decode` or when it is loaded.

    Args:
        path: An image or video file. A remote one (``s3://``, ...) is left
            to the loader, which reads it through mmengine's file backends.

    Returns:
        The reason, or None when the header reads.
    """
    if '://' in path:
        return None
    try:
        if os.path.getsize(path) == 0:
            return 'the file is empty'
    except OSError as error:
        return _error_text(error)
    if is_video(path):
        try:
            # OpenCV reads the container's header; decord, the fallback,
            # indexes every frame when it opens a file.
            OpenCVReader(path)
        except Exception:
            try:
                FallbackReader(path)
            except Exception as error:
                return _error_text(error)
        return None
    try:
        with Image.open(path):
            return None
    except Exception as error:
        # A format OpenCV reads and Pillow does not (OpenCV checks the
        # signature only).
        if cv2.haveImageReader(path):
            return None
        return _error_text(error)


def decode(path: str) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """Decode ``path`` completely.

    Images are decoded by Pillow, which raises on truncated data (OpenCV
    may return a partly grey JPEG), with OpenCV for the formats Pillow does
    not know; videos by decord (OpenCV as fallback) at their first and last
    frame.

    Args:
        path: An image or video file that exists.

    Returns:
        ``((width, height), None)`` as a loader sees it (after the EXIF
        orientation), or ``(None, reason)``.
    """
    if is_video(path):
        try:
            reader = FallbackReader(path)
            frames = reader.get_batch([0, len(reader) - 1])
        except Exception as error:
            return None, _error_text(error)
        return (frames.shape[2], frames.shape[1]), None
    try:
        with Image.open(path) as image:
            image.load()
            width, height = image.size
            if image.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
        return (width, height), None
    except UnidentifiedImageError as error:
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED) \
            if cv2.haveImageReader(path) else None
        if image is None:
            return None, _error_text(error)
        return (image.shape[1], image.shape[0]), None
    except Exception as error:
        return None, _error_text(error)


def _reads_a_file(transform: object, results: dict) -> bool:
    """Whether ``transform`` reads one of the sample's files."""
    if isinstance(transform, LoadAnnotations):
        return bool(results.get('seg_map_path'))
    return isinstance(transform, READERS)


def _failed_file(transform: object, results: dict) -> Optional[str]:
    """The file a failing loading transform was reading, if it names
    one."""
    if isinstance(transform, VIDEO_READERS):
        # mmaction2's LoadRGBFromFile reads img_path.
        keys = ('filename', 'frame_dir', 'img_path')
    elif isinstance(transform, LoadAnnotations):
        # A label map if the sample has one, else the annotations of the
        # image.
        keys = ('seg_map_path', 'img_path')
    else:
        keys = ('img_path', )
    return next((str(results[key]) for key in keys if results.get(key)),
                None)


def _first_sample(data: dict) -> Optional[BaseDataElement]:
    samples = data.get('data_samples') if isinstance(data, dict) else None
    if isinstance(samples, Sequence) and samples:
        samples = samples[0]
    return samples if isinstance(samples, BaseDataElement) else None


class GuardedPipeline(Compose):
    """A dataset's transforms, with unreadable files skipped or named.

    Args:
        transforms: The transforms of the dataset's ``Compose``.
        skip: Training: an unreadable file makes the pipeline return None
            (the dataset then draws another index) and is carried by the
            next sample returned, under ``metainfo[SKIPPED_KEY]``.
            Evaluation (False): it raises :class:`UnreadableDataError`.
        max_files: In training, raise once more than this many files
            failed in a row in this process, without any sample getting
            through to carry them (a wrong data root, a lost mount).
        advice: What the errors tell the user to do.
    """

    def __init__(self,
                 transforms: Sequence,
                 skip: bool,
                 max_files: int = 100,
                 advice: str = '') -> None:
        super().__init__(transforms)
        self.skip = skip
        self.max_files = max_files
        self.advice = advice
        self._pending: List[dict] = []

    def __call__(self, data: dict) -> Optional[dict]:
        """Run the transforms; see the class docstring for failures."""
        for transform in self.transforms:
            try:
                data = transform(data)
            except Exception as error:
                path = _failed_file(transform, data)
                # Not a file's fault, or none to name: the run's error.
                if path is None or not _reads_a_file(transform, data):
                    raise
                self._unreadable(transform, path, error)
                return None
            if data is None:
                return None
        if self._pending:
            sample = _first_sample(data)
            if sample is None:
                raise TypeError(
                    'GuardedPipeline hands skipped files on in the metainfo '
                    "of the sample's data_samples, which this pipeline does "
                    "not produce: end it with the toolbox's Pack*Inputs "
                    'transform.')
            sample.set_metainfo({SKIPPED_KEY: self._pending})
            self._pending = []
        return data

    def _unreadable(self, transform: object, path: str,
                    error: Exception) -> None:
        entry = dict(
            path=path,
            reason=f'{type(transform).__name__}: {_error_text(error)}')
        if not self.skip:
            raise UnreadableDataError(
                f'Cannot read {entry["path"]} ({entry["reason"]}). '
                'Evaluation stops rather than leave the file out, which '
                f'would change the metric. {self.advice}') from error
        self._pending.append(entry)
        # Failures, not distinct files: a small set may draw one bad file
        # again and again.
        if len(self._pending) > self.max_files:
            raise UnreadableDataError(
                f'{len(self._pending)} unreadable training files in a row, '
                'more than '
                f'max_files={self.max_files} (a wrong data root, a lost '
                f'mount?):\n{format_files(self._pending)}\n'
                f'{self.advice}') from error


def guard_pipelines(dataset: object, **kwargs) -> int:
    """Put the pipeline of ``dataset``, and of every dataset it wraps
    (mmengine's ``ConcatDataset``, ``RepeatDataset``, ...), in a
    :class:`GuardedPipeline`.

    Args:
        dataset: A built dataset.
        **kwargs: :class:`GuardedPipeline`'s arguments after
            ``transforms``.

    Returns:
        How many pipelines are guarded (already guarded ones included).
    """
    count = 0
    pipeline = getattr(dataset, 'pipeline', None)
    if isinstance(pipeline, GuardedPipeline):
        count += 1
    elif isinstance(pipeline, Compose):
        dataset.pipeline = GuardedPipeline(pipeline.transforms, **kwargs)
        count += 1
    inner = list(getattr(dataset, 'datasets', None) or [])
    if getattr(dataset, 'dataset', None) is not None:
        inner.append(dataset.dataset)
    return count + sum(guard_pipelines(d, **kwargs) for d in inner)


def pop_skipped(data_batch: object) -> Tuple[int, List[dict]]:
    """The samples of a collated batch and the skipped files they carry.

    The files are removed from the samples' metainfo, so that the model
    never sees them.

    Args:
        data_batch: A batch from the DataLoader (``inputs``,
            ``data_samples``).

    Returns:
        The number of samples and the skipped-file entries.
    """
    if not isinstance(data_batch, dict):
        return 0, []
    samples = data_batch.get('data_samples')
    if not isinstance(samples, Sequence):
        return len(data_batch.get('inputs', ())), []
    entries: List[dict] = []
    for sample in samples:
        if isinstance(sample, BaseDataElement) and SKIPPED_KEY in sample:
            entries.extend(sample.metainfo[SKIPPED_KEY])
            delattr(sample, SKIPPED_KEY)
    return len(samples), entries
