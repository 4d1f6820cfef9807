"""`comfy_execution.graph_utils`: the expansion graph helper, from comfyserve.engine.graph_builder."""

from comfyserve.engine.blocker import ExecutionBlocker
from comfyserve.engine.graph_builder import GraphBuilder, Node, add_graph_prefix, is_link

__all__ = ["ExecutionBlocker", "GraphBuilder", "Node", "add_graph_prefix", "is_link"]
