"""The config service's aiohttp app keys, shared by its route modules (app.py, dashboard.py)."""

from __future__ import annotations

from aiohttp import web

from services.common.http import TokenCheck
from services.config.service import ConfigService

SERVICE_KEY = web.AppKey("service", ConfigService)
TOKENS_KEY = web.AppKey("tokens", TokenCheck)
