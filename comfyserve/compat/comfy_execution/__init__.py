"""`comfy_execution` for custom nodes: `graph` (ExecutionBlocker) and `graph_utils` (GraphBuilder)."""
