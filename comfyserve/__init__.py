"""comfyserve: a drop-in replacement for the ComfyUI server."""

__version__ = "0.1.0"
# The ComfyUI release whose API we mirror; reported by /system_stats.
COMFYUI_VERSION = "0.8.0"
