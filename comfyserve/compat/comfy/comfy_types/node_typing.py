"""`comfy.comfy_types.node_typing`: ComfyUI's type names and the typing helpers for node classes.

`IO` is a str enum, so `IO.IMAGE == "IMAGE"` and it can stand anywhere a type name goes
(`RETURN_TYPES = (IO.IMAGE,)`, `/object_info` shows "IMAGE"). Like ComfyUI's, its `!=` knows
the wildcard `"*"` and comma-separated unions (`IO.NUMBER != "INT"` is False).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, Literal, TypedDict


class StrEnum(str, Enum):
    """A str enum whose str() is its value (enum.StrEnum is 3.11+)."""

    def __str__(self) -> str:
        return self.value


class IO(StrEnum):
    """Node input/output type names."""

    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    LORA_MODEL = "LORA_MODEL"
    LOSS_MAP = "LOSS_MAP"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    AUDIO = "AUDIO"
    WEBCAM = "WEBCAM"
    POINT = "POINT"
    FACE_ANALYSIS = "FACE_ANALYSIS"
    BBOX = "BBOX"
    SEGS = "SEGS"
    VIDEO = "VIDEO"

    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"

    def __ne__(self, value: object) -> bool:
        if self == "*" or value == "*":
            return False
        if not isinstance(value, str):
            return True
        mine = frozenset(self.value.split(","))
        theirs = frozenset(value.split(","))
        return not (mine <= theirs or theirs <= mine)

    # Hash as the str it equals (Enum hashes the member name), so `{"*": …}[IO.ANY]` works.
    __hash__ = str.__hash__


class RemoteInputOptions(TypedDict, total=False):
    route: str
    refresh_button: bool
    control_after_refresh: Literal["first", "last"]
    timeout: int
    max_retries: int
    refresh: int


class MultiSelectOptions(TypedDict, total=False):
    placeholder: str
    chip: bool


class InputTypeOptions(TypedDict, total=False):
    """The options dict of one input (`("INT", {...})`); every key is optional."""

    default: bool | str | float | int | list | tuple
    defaultInput: bool
    forceInput: bool
    lazy: bool
    rawLink: bool
    tooltip: str
    min: float
    max: float
    step: float
    round: float
    label_on: str
    label_off: str
    multiline: bool
    placeholder: str
    dynamicPrompts: bool
    image_upload: bool
    image_folder: Literal["input", "output", "temp"]
    remote: RemoteInputOptions
    control_after_generate: bool
    options: list[str | int | float]
    multi_select: MultiSelectOptions


class HiddenInputTypeDict(TypedDict, total=False):
    node_id: Literal["UNIQUE_ID"]
    unique_id: Literal["UNIQUE_ID"]
    prompt: Literal["PROMPT"]
    extra_pnginfo: Literal["EXTRA_PNGINFO"]
    dynprompt: Literal["DYNPROMPT"]


class InputTypeDict(TypedDict, total=False):
    """What `INPUT_TYPES()` returns."""

    required: dict[str, tuple[Any, InputTypeOptions]]
    optional: dict[str, tuple[Any, InputTypeOptions]]
    hidden: HiddenInputTypeDict


class ComfyNodeABC(ABC):
    """Base class naming the attributes of a ComfyUI node class."""

    DESCRIPTION: str
    CATEGORY: str
    EXPERIMENTAL: bool
    DEPRECATED: bool
    OUTPUT_NODE: bool
    INPUT_IS_LIST: bool
    OUTPUT_IS_LIST: tuple[bool, ...]
    RETURN_TYPES: tuple[Any, ...]
    RETURN_NAMES: tuple[str, ...]
    OUTPUT_TOOLTIPS: tuple[str, ...]
    FUNCTION: str

    @classmethod
    @abstractmethod
    def INPUT_TYPES(cls) -> InputTypeDict:
        return {"required": {}}


class CheckLazyMixin:
    """A `check_lazy_status` that asks for every input not evaluated yet."""

    def check_lazy_status(self, **kwargs: Any) -> list[str]:
        return [name for name, value in kwargs.items() if value is None]


class FileLocator(TypedDict, total=False):
    filename: str
    subfolder: str
    type: Literal["input", "output", "temp"]
