"""ImageNet-V2 (Recht et al., 2019) as an mmpretrain dataset."""
from typing import List, Tuple

from mmengine.logging import MMLogger
from mmpretrain.datasets import CustomDataset
from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
from mmpretrain.datasets.custom import find_folders, get_samples

from eva_mm.registry import DATASETS


@DATASETS.register_module()
class ImageNetV2(CustomDataset):
    """ImageNet-V2, whose class folders are named by ImageNet-1K label.

    The released sets (e.g. ``ImageNetV2-matched-frequency``) store class
    ``k`` in a folder named ``k`` (``0`` .. ``999``). A plain CustomDataset
    would number the folders in sorted string order (``0, 1, 10, 100, ...``)
    and mislabel almost every image; here the folder name is the label.

    Args:
        **kwargs: As :class:`mmpretrain.datasets.CustomDataset`
            (``data_root``, ``data_prefix``, ``pipeline``, ...).
    """

    METAINFO = {'classes': IMAGENET_CATEGORIES}

    def _find_samples(self) -> List[Tuple[str, int]]:
        folders, _ = find_folders(self.img_prefix)
        not_labels = [f for f in folders if not f.isdigit()
                      or not 0 <= int(f) < len(self.CLASSES)]
        if not_labels:
            raise ValueError(
                f'ImageNetV2 expects class folders named 0..'
                f'{len(self.CLASSES) - 1} under {self.img_prefix!r}, found '
                f'{not_labels[:5]}. For folders named by WordNet id use '
                'CustomDataset.')
        folder_to_idx = {folder: int(folder) for folder in folders}
        samples, empty = get_samples(
            self.img_prefix, folder_to_idx, is_valid_file=self.is_valid_file)
        if not samples:
            raise RuntimeError(f'Found no image under {self.img_prefix!r}.')
        if empty:
            MMLogger.get_current_instance().warning(
                f'ImageNetV2: no image in class folder(s) {sorted(empty)}.')
        self.folder_to_idx = folder_to_idx
        return samples
