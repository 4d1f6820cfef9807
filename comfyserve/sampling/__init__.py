"""ComfyUI's sampling numerics: model sampling (sigma tables, EPS/V prediction), schedulers,
samplers, initial and step noise, and (guidance.py) classifier-free guidance.

Importing this package is cheap: the submodules import torch themselves.
"""
