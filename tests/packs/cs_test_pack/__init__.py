"""A package pack as ComfyUI packs are written: nodes, routes and front-end files."""

from . import routes  # noqa: F401 - registers the pack's HTTP routes
from .nodes_impl import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
