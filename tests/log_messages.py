"""Capturing what mmengine's logger says, for tests of log lines."""
import logging
from contextlib import contextmanager
from typing import Iterator, List

from mmengine.logging import MMLogger


@contextmanager
def log_messages() -> Iterator[List[str]]:
    """The messages mmengine's current logger emits meanwhile.

    Yields:
        The list the messages are appended to.
    """
    messages: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
