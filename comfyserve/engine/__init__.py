"""The graph engine: node registry, validation, execution order and the executor."""
