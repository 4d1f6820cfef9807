"""The server's feature flags: answered on `/features` and to a websocket's first message."""

from __future__ import annotations

from typing import Any

from comfyserve.config import Settings


def feature_flags(settings: Settings) -> dict[str, Any]:
    return {
        "supports_preview_metadata": True,
        "max_upload_size": settings.max_upload_size,
        "extension": {"manager": {"supports_v4": True}},
    }
