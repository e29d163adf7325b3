"""``load_from`` in a released file's own layout, converted in memory."""
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import Runner

from eva_mm.checkpoints.reading import unwrap_state_dict
from eva_mm.checkpoints.recognition import convert_for_model, replace_weights
from eva_mm.checkpoints.sources import is_url, zoo_model_of_url
from eva_mm.registry import HOOKS

# How a user names the format of load_from, for messages.
FORMAT_OPTION = ('checkpoint_format = NAME in the config (tools/test.py: '
                 '--checkpoint-format NAME)')


def bare_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP and test-time-augmentation wrappers.

    Args:
        model: A runner's model.

    Returns:
        The model whose weights a checkpoint names.
    """
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


@HOOKS.register_module()
class OfficialCheckpointHook(Hook):
    """Read ``load_from`` in a released file's layout, converted in memory.

    mmengine's runner reads ``load_from`` (a file, or an ``http(s)://`` URL
    through eva_mm's safe download) and calls ``after_load_checkpoint``
    before loading it into the model. Here the weights get their format:
    the config's ``checkpoint_format``, else the model-zoo entry of the URL,
    else, for a file with names the model lacks, the registered format that
    recognises it; they are converted with the config's sizes and left
    where the runner loads from
    (:func:`~eva_mm.checkpoints.recognition.convert_for_model`). A
    checkpoint in eva_mm's layout passes unchanged, and a resumed run is
    left alone. mmengine then loads the weights non-strictly, listing what
    it skips (``tools/test.py`` has refused a partial load before, from the
    names and shapes). ``tools/train.py`` and ``tools/test.py`` add this
    hook (:func:`eva_mm.engine.cli.build_runner`).
    """

    # Before the hooks that read the loaded weights (EMAHook copies them).
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._converted_load_from = False

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        """Convert ``checkpoint`` in place if it is in a released layout.

        Args:
            runner: The runner.
            checkpoint: What was read from ``load_from``.
        """
        spec = runner.cfg.get('load_from')
        # load_from is the run's first load; later ones (other hooks') are
        # not that file.
        if (spec is None or runner.cfg.get('resume')
                or self._converted_load_from):
            return
        self._converted_load_from = True
        model = bare_model(runner.model)
        weights = convert_for_model(
            unwrap_state_dict(checkpoint), model.state_dict, spec,
            FORMAT_OPTION, runner.cfg.get('checkpoint_format'),
            zoo_model_of_url(spec) if is_url(spec) else None, runner.cfg)
        if weights.conversion is not None:
            replace_weights(checkpoint, weights.state_dict)
