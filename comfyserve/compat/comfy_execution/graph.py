"""`comfy_execution.graph`: ExecutionBlocker (the engine's own class) and the link helper."""

from comfyserve.engine.blocker import ExecutionBlocker
from comfyserve.engine.graph_builder import is_link

__all__ = ["ExecutionBlocker", "is_link"]
