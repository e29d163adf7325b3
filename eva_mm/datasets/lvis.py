"""LVIS v1 detection data without the ``lvis`` package.

mmdet's ``LVISV1Dataset`` reads its json through the ``lvis`` package, whose
0.5.3 release does not run on NumPy 2 and is not installed here. An LVIS v1
file is COCO-shaped, so :class:`LVISV1Dataset` reads it with mmdet's COCO
loader instead and only fills in the one field LVIS v1 names differently.
"""
from typing import List, Union

from mmdet.datasets import CocoDataset
from mmdet.datasets import LVISV1Dataset as MMDetLVISV1Dataset

from eva_mm.registry import DATASETS

_COCO_IMAGES_URL = 'http://images.cocodataset.org/'


@DATASETS.register_module()
class LVISV1Dataset(MMDetLVISV1Dataset):
    """mmdet's LVIS v1 dataset (1203 classes), loaded with pycocotools.

    Gives the same data list as mmdet's ``LVISV1Dataset``: image paths from
    ``coco_url`` (``train2017/000000391895.jpg`` under ``data_prefix``), the
    class order of the file. A reduced class list in ``metainfo`` keeps
    those categories only, as in mmdet's ``CocoDataset``.
    """

    def load_data_list(self) -> List[dict]:
        """Read the LVIS json with mmdet's COCO loader.

        Returns:
            One dict per image with its instances.
        """
        return CocoDataset.load_data_list(self)

    def parse_data_info(self, raw_data_info: dict) -> Union[dict, List[dict]]:
        """Parse one image after deriving its file name from ``coco_url``.

        Args:
            raw_data_info: ``raw_img_info`` and ``raw_ann_info`` of one image.

        Returns:
            The image's data info, as mmdet's ``CocoDataset`` builds it.

        Raises:
            ValueError: If the image has neither ``file_name`` nor a
                ``coco_url`` on images.cocodataset.org.
        """
        img_info = raw_data_info['raw_img_info']
        if 'file_name' not in img_info:
            url = img_info.get('coco_url', '')
            if not url.startswith(_COCO_IMAGES_URL):
                raise ValueError(
                    f'LVIS image {img_info.get("id")} has no file_name and '
                    f'its coco_url {url!r} is not under {_COCO_IMAGES_URL}; '
                    'LVIS v1 images are COCO 2017 images (split/file.jpg).')
            # LVIS v1 keeps the split in the URL: train2017/ or val2017/.
            img_info['file_name'] = url[len(_COCO_IMAGES_URL):]
        return super().parse_data_info(raw_data_info)
