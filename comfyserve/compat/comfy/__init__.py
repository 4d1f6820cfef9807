"""`comfy` for custom nodes: the parts of ComfyUI's `comfy` package that comfyserve provides.

`comfy.utils` (ProgressBar, common_upscale, load_torch_file), `comfy.model_management`
(interrupt checks, devices, cache), `comfy.comfy_types` (type names, node typing),
`comfy.cli_args` (`args`: the server's command line with ComfyUI's flag names). Other
`comfy.*` modules (models, samplers) are not here: importing them fails with
ModuleNotFoundError, and a pack that needs them fails to load with that traceback.
"""
