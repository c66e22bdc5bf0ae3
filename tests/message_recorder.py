"""A pytest plugin that records the message of every ``MithrilError`` raised while tests run.

``tests/test_errors_catalogue.py`` runs the catalogue's tests with ``-p tests.message_recorder``
and ``MITHRIL_MESSAGE_LOG=<directory>``; each test process writes the messages it saw to a JSON
file there, so the catalogue test can check what users would read (no internal symbol ids).
"""

from __future__ import annotations

import json
import os
from typing import Any

from mithril.errors import MithrilError

_MESSAGES: list[str] = []
_original_init = MithrilError.__init__


def _recording_init(self: MithrilError, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    _MESSAGES.append(str(args[0]) if args else "")


def pytest_configure(config: Any) -> None:
    MithrilError.__init__ = _recording_init  # type: ignore[method-assign]


def pytest_sessionfinish(session: Any, exitstatus: Any) -> None:
    directory = os.environ.get("MITHRIL_MESSAGE_LOG")
    if directory:
        path = os.path.join(directory, f"messages-{os.getpid()}.json")
        with open(path, "w") as f:
            json.dump(_MESSAGES, f)
