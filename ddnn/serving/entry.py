"""The ``main()`` of a ddnn service: settings, logging, the event loop, exit codes."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ddnn.logs import configure_logging
from ddnn.serving.settings import ProcessSettings, SettingsError, load_settings

S = TypeVar("S", bound=ProcessSettings)


def run_service(name: str, settings_cls: type[S], prefix: str, serve: Callable[[S], Coroutine[Any, Any, None]],
                argv: list[str] | None = None, description: str = "") -> int:
    """Load settings (exit 2 naming the bad one), then run ``serve`` until it returns (exit 0) or a
    setting proves unusable at start-up, e.g. an unreadable checkpoint or a taken port (exit 1)."""
    try:
        settings = load_settings(settings_cls, prefix, argv, description=description)
    except SettingsError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(json_lines=settings.log_json)
    try:
        asyncio.run(serve(settings))
    except (ValueError, OSError) as exc:
        logging.getLogger(f"services.{name}").error("%s", exc)
        return 1
    return 0
