"""Stable Diffusion models from single-file checkpoints, with ComfyUI's numerics.

Nothing here is imported at server start-up: node modules import these lazily, and the
modules themselves import diffusers only inside the functions that build models. See
docs/MODEL_STACK.md for the plan and the contracts between the parts.
"""
