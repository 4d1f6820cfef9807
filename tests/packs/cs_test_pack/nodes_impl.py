import time

import comfy.model_management
import comfy.utils
import folder_paths
from comfy.comfy_types import IO, ComfyNodeABC
from server import PromptServer

import nodes


class CSCountdown(ComfyNodeABC):
    """Counts `steps` with a progress bar, checking for interrupts; tells the client when done."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "steps": (IO.INT, {"default": 3, "min": 1, "max": 10000}),
                "delay": (IO.FLOAT, {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (IO.INT,)
    RETURN_NAMES = ("count",)
    FUNCTION = "count"
    CATEGORY = "cs_test"

    def count(self, steps, delay, unique_id=None):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if delay:
                time.sleep(delay)
            bar.update(1)
        server = PromptServer.instance
        server.send_sync("cs_test.done", {"node": unique_id, "steps": steps}, server.client_id)
        return (steps,)


class CSReport(ComfyNodeABC):
    """An output node reporting what folder_paths and nodes show it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": (IO.INT, {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "cs_test"

    def report(self, count):
        return {
            "ui": {
                "count": [count],
                "checkpoints": folder_paths.get_filename_list("checkpoints"),
                "output_directory": [folder_paths.get_output_directory()],
                "models_dir": [folder_paths.models_dir],
                "max_resolution": [nodes.MAX_RESOLUTION],
                "device": [str(comfy.model_management.get_torch_device())],
            }
        }


NODE_CLASS_MAPPINGS = {"CSCountdown": CSCountdown, "CSReport": CSReport}
NODE_DISPLAY_NAME_MAPPINGS = {"CSCountdown": "Countdown (test pack)"}
