"""Zero-shot image classification with an open_clip model (EVA CLIP)."""
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel

from eva_mm.registry import MODELS

Template = Union[str, Callable[[str], str]]


def openai_mean_std() -> Tuple[List[float], List[float]]:
    """OpenAI's CLIP normalisation, which open_clip's EVA models use.

    open_clip's ``OPENAI_DATASET_MEAN`` / ``OPENAI_DATASET_STD`` (imported
    here, as open_clip is everywhere in this module, only when needed).

    Returns:
        Mean and std per RGB channel in the 0-255 range of OpenMMLab's data
        preprocessors.
    """
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    return ([value * 255 for value in OPENAI_DATASET_MEAN],
            [value * 255 for value in OPENAI_DATASET_STD])


# open_clip's zero-shot metadata, which its ImageNet evaluation (and so the
# published EVA CLIP numbers) uses.
_CLASSNAMES = {'imagenet': 'IMAGENET_CLASSNAMES'}
_TEMPLATES = {
    'openai_imagenet': 'OPENAI_IMAGENET_TEMPLATES',
    'simple_imagenet': 'SIMPLE_IMAGENET_TEMPLATES',
}


def resolve_classnames(classnames: Union[str, Sequence[str]]) -> List[str]:
    """Class names from a list, a text file or open_clip's ImageNet names.

    Args:
        classnames: A list, a text file with one name per line (in the
            dataset's label order), or ``'imagenet'`` for open_clip's
            readable ImageNet-1K names (OpenAI's, in the sorted-WordNet-id
            label order of mmpretrain's ``ImageNet``).

    Returns:
        The class names.
    """
    if isinstance(classnames, str):
        if classnames in _CLASSNAMES:
            import open_clip
            return list(getattr(open_clip, _CLASSNAMES[classnames]))
        if not os.path.isfile(classnames):
            raise FileNotFoundError(
                f'classnames={classnames!r} is neither a file nor one of '
                f'{sorted(_CLASSNAMES)}.')
        with open(classnames, encoding='utf-8') as file:
            return [line.strip() for line in file if line.strip()]
    return list(classnames)


def resolve_templates(templates: Union[str, Sequence[Template]]
                      ) -> List[Callable[[str], str]]:
    """Prompt templates as functions of the class name.

    Args:
        templates: ``'openai_imagenet'`` (the 80 prompts of CLIP's ImageNet
            evaluation), ``'simple_imagenet'`` (their 7-prompt subset), or a
            list of format strings with ``{}`` for the class name (functions
            are accepted too).

    Returns:
        One function per prompt.
    """
    if isinstance(templates, str):
        if templates not in _TEMPLATES:
            raise KeyError(f'Unknown prompt set {templates!r}; choose one of '
                           f'{sorted(_TEMPLATES)} or give format strings.')
        import open_clip
        return list(getattr(open_clip, _TEMPLATES[templates]))
    resolved = []
    for template in templates:
        if callable(template):
            resolved.append(template)
        elif '{}' in template:
            resolved.append(template.format)
        else:
            raise ValueError(f'Template {template!r} has no {{}} for the '
                             'class name.')
    return resolved


@MODELS.register_module()
class OpenCLIPZeroShot(BaseModel):
    """Classify images by their similarity to prompted class names.

    Each class is represented by the mean of the normalised text embeddings
    of its prompts, normalised again (CLIP's prompt ensembling); an image
    gets the softmax of its scaled cosine similarities to the classes as
    ``pred_score``, which mmpretrain's ``Accuracy`` turns into top-1/top-5.

    mmpretrain's ``CLIPZeroShot`` is not used: it builds OpenAI's CLIP
    architecture itself (no timm towers, so no EVA CLIP), needs
    ``transformers`` and a HuggingFace tokenizer that it downloads, and
    without ``transformers`` mmpretrain registers a placeholder under its
    name, so its module (and the prompt lists in its package) cannot even be
    imported. open_clip's own zero-shot pieces are used instead: its
    tokenizer, prompt ensembling (``build_zero_shot_classifier``), ImageNet
    class names and templates; the metric is mmpretrain's ``Accuracy``.

    Args:
        model_name: An open_clip model name, e.g. ``'EVA01-g-14'``.
        pretrained: Weights for ``open_clip.create_model``: a local file
            (e.g. of ``tools/model_converters/eva_clip.py export`` or of
            open_clip's training) or an open_clip tag. ``None`` leaves the
            model random, for loading a checkpoint later (``tools/test.py
            CONFIG CHECKPOINT`` loads open_clip checkpoints as they are).
        model_config: A custom open_clip JSON config to register first; its
            file name is the model name.
        classnames: See :func:`resolve_classnames`.
        templates: See :func:`resolve_templates`.
        text_embeddings: A file with a (num_classes, D) tensor of class
            embeddings to use instead of encoding prompts (they are
            normalised here), e.g. computed once for a large class set.
        quick_gelu: Build the model with QuickGELU (open_clip's
            ``force_quick_gelu``), for weights trained with it, e.g. a text
            tower started from OpenAI CLIP's with ``--force-quick-gelu``.
        data_preprocessor: The image preprocessor; defaults to mmpretrain's
            ``ClsDataPreprocessor`` with OpenAI's CLIP mean and std.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self,
                 model_name: str,
                 pretrained: Optional[str] = None,
                 model_config: Optional[str] = None,
                 classnames: Union[str, Sequence[str]] = 'imagenet',
                 templates: Union[str, Sequence[Template]] = 'openai_imagenet',
                 text_embeddings: Optional[str] = None,
                 quick_gelu: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            mean, std = openai_mean_std()
            data_preprocessor = dict(
                type='mmpretrain.ClsDataPreprocessor',
                mean=mean,
                std=std,
                to_rgb=True)
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        import open_clip
        if model_config is not None:
            open_clip.add_model_config(model_config)
        self.clip = open_clip.create_model(
            model_name, pretrained=pretrained, force_quick_gelu=quick_gelu)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.classnames = resolve_classnames(classnames)
        self.templates = resolve_templates(templates)
        self.text_embeddings = text_embeddings
        # Filled on the first prediction: the text tower runs once.
        self.class_embeddings: Optional[torch.Tensor] = None
        self._register_load_state_dict_pre_hook(self._add_clip_prefix)

    def _add_clip_prefix(self, state_dict: Dict[str, torch.Tensor],
                         prefix: str, *args, **kwargs) -> None:
        """Load open_clip's own checkpoints, whose keys lack ``clip.``."""
        # New text weights make the cached class embeddings stale.
        self.class_embeddings = None
        for key in list(state_dict):
            name = key[len(prefix):]
            if key.startswith(prefix) and name.split('.')[0] in (
                    'visual', 'text', 'transformer', 'token_embedding',
                    'positional_embedding', 'ln_final', 'text_projection',
                    'logit_scale', 'logit_bias'):
                state_dict[f'{prefix}clip.{name}'] = state_dict.pop(key)

    @torch.no_grad()
    def encode_classes(self) -> torch.Tensor:
        """The (num_classes, D) normalised class embeddings."""
        if self.text_embeddings is not None:
            embeddings = torch.load(
                self.text_embeddings, map_location='cpu', weights_only=True)
            if embeddings.shape[0] != len(self.classnames):
                raise ValueError(
                    f'{self.text_embeddings} has {embeddings.shape[0]} class '
                    f'embeddings for {len(self.classnames)} classes.')
            return F.normalize(embeddings.float(), dim=-1)
        from open_clip import build_zero_shot_classifier
        weights = build_zero_shot_classifier(
            self.clip,
            self.tokenizer,
            self.classnames,
            self.templates,
            device=self.clip.logit_scale.device)
        return weights.t().float()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities (B, num_classes) of images and
        classes."""
        if self.class_embeddings is None:
            self.class_embeddings = self.encode_classes().to(images.device)
        features = F.normalize(self.clip.encode_image(images).float(), dim=-1)
        return self.clip.logit_scale.exp().float() * (
            features @ self.class_embeddings.t())

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[list] = None,
                mode: str = 'predict'):
        """``'predict'``: data samples with scores; ``'tensor'``: logits.

        Training is open_clip's (see docs/clip.md), so there is no
        ``'loss'`` mode.
        """
        if mode == 'tensor':
            return self.logits(inputs)
        if mode != 'predict':
            raise RuntimeError(
                f'OpenCLIPZeroShot only evaluates (mode {mode!r}); train '
                'CLIP with open_clip, see docs/clip.md.')
        from mmpretrain.structures import DataSample
        with torch.no_grad():
            scores = self.logits(inputs).softmax(dim=-1)
        if data_samples is None:
            data_samples = [DataSample() for _ in range(len(scores))]
        for sample, score in zip(data_samples, scores):
            sample.set_pred_score(score).set_pred_label(score.argmax())
        return data_samples
