"""Structured log lines: one JSON object per line when stderr is not a terminal, key=value otherwise."""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any, TextIO

import msgspec

_ENCODER = msgspec.json.Encoder(enc_hook=str)


class Logger:
    """A tiny structured logger; every line names the service and an event."""

    def __init__(self, service: str, stream: TextIO | None = None, json_lines: bool | None = None):
        self.service = service
        self.stream = stream or sys.stderr
        self.json_lines = (not self.stream.isatty()) if json_lines is None else json_lines
        self.fields: dict[str, Any] = {}

    def bind(self, **fields: Any) -> "Logger":
        """A child logger that adds these fields to every line (e.g. the worker id)."""
        child = Logger(self.service, self.stream, self.json_lines)
        child.fields = {**self.fields, **fields}
        return child

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        record = {"ts": round(time.time(), 3), "level": level, "service": self.service, "event": event}
        record.update(self.fields)
        record.update(fields)
        if self.json_lines:  # msgspec: the router logs a line per job, json.dumps showed in profiles
            line = _ENCODER.encode(record).decode()
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(record.pop("ts")))
            rest = " ".join(f"{k}={_fmt(v)}" for k, v in record.items() if k not in ("level", "event"))
            line = f"{stamp} {level:<5} {event} {rest}"
        try:
            print(line, file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):
            pass

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warn", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def exception(self, event: str, exc: BaseException, level: str = "error",
                  **fields: Any) -> None:
        """An error line that carries `exc` and its traceback (`traceback`, one string): for
        failures nobody expected, a bug until shown otherwise, where `repr(exc)` alone would
        leave the reader guessing where it came from."""
        self._emit(level, event, {**fields, "error": repr(exc), "traceback": "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()})


def _fmt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text
