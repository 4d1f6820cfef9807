"""ComfyUI's string utility nodes: concatenate, slice, measure, change case, trim, replace, compare
and regular-expression match/extract/replace.

Behaviour and `/object_info` entries are ComfyUI 0.8's (`comfy_extras.nodes_string`, a
v3-schema module). Regex nodes use Python's `re`; an invalid pattern makes Match false and
Extract empty, while Replace raises, as in ComfyUI.
"""

from __future__ import annotations

import re
from typing import Any

from nodes._v3 import V3Node, combo

CATEGORY = "utils/string"
TEXT = ("STRING", {"multiline": True})
CASE_MODES = ["UPPERCASE", "lowercase", "Capitalize", "Title Case"]
TRIM_MODES = ["Both", "Left", "Right"]
COMPARE_MODES = ["Starts With", "Ends With", "Equal"]
EXTRACT_MODES = ["First Match", "All Matches", "First Group", "All Groups"]
JOIN = "\n"  # RegexExtract puts one result per line


def regex_flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    flags = re.IGNORECASE if case_insensitive else 0
    if multiline:
        flags |= re.MULTILINE
    if dotall:
        flags |= re.DOTALL
    return flags


def _flag_inputs() -> dict[str, Any]:
    return {
        "case_insensitive": ("BOOLEAN", {"default": True}),
        "multiline": ("BOOLEAN", {"default": False}),
        "dotall": ("BOOLEAN", {"default": False}),
    }


class _StringNode(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY


class StringConcatenate(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string_a": TEXT, "string_b": TEXT, "delimiter": ("STRING", {"default": "", "multiline": False})}}

    def execute(self, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (delimiter.join((string_a, string_b)),)


class StringSubstring(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": TEXT, "start": ("INT", {}), "end": ("INT", {})}}

    def execute(self, string: str, start: int, end: int) -> tuple[str]:
        return (string[start:end],)  # Python slicing: negative indices count from the end


class StringLength(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("length",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": TEXT}}

    def execute(self, string: str) -> tuple[int]:
        return (len(string),)


class CaseConverter(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": TEXT, "mode": combo(CASE_MODES)}}

    def execute(self, string: str, mode: str) -> tuple[str]:
        convert = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize, "Title Case": str.title}
        return (convert[mode](string) if mode in convert else string,)


class StringTrim(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": TEXT, "mode": combo(TRIM_MODES)}}

    def execute(self, string: str, mode: str) -> tuple[str]:
        trim = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}
        return (trim[mode](string) if mode in trim else string,)


class StringReplace(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": TEXT, "find": TEXT, "replace": TEXT}}

    def execute(self, string: str, find: str, replace: str) -> tuple[str]:
        return (string.replace(find, replace),)


class StringContains(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"
    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = ("contains",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": TEXT, "substring": TEXT, "case_sensitive": ("BOOLEAN", {"default": True})}}

    def execute(self, string: str, substring: str, case_sensitive: bool) -> tuple[bool]:
        if not case_sensitive:
            string, substring = string.lower(), substring.lower()
        return (substring in string,)


class StringCompare(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"
    RETURN_TYPES = ("BOOLEAN",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "string_a": TEXT,
                "string_b": TEXT,
                "mode": combo(COMPARE_MODES),
                "case_sensitive": ("BOOLEAN", {"default": True}),
            }
        }

    def execute(self, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple[bool]:
        if not case_sensitive:
            string_a, string_b = string_a.lower(), string_b.lower()
        if mode == "Equal":
            return (string_a == string_b,)
        if mode == "Starts With":
            return (string_a.startswith(string_b),)
        if mode == "Ends With":
            return (string_a.endswith(string_b),)
        raise ValueError(f"Unknown compare mode: {mode}")


class RegexMatch(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"
    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = ("matches",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": TEXT, "regex_pattern": TEXT, **_flag_inputs()}}

    def execute(self, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool, dotall: bool) -> tuple[bool]:
        try:
            found = re.search(regex_pattern, string, regex_flags(case_insensitive, multiline, dotall))
        except re.error:
            return (False,)
        return (found is not None,)


class RegexExtract(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "string": TEXT,
                "regex_pattern": TEXT,
                "mode": combo(EXTRACT_MODES),
                **_flag_inputs(),
                "group_index": ("INT", {"default": 1, "min": 0, "max": 100}),
            }
        }

    def execute(
        self,
        string: str,
        regex_pattern: str,
        mode: str,
        case_insensitive: bool,
        multiline: bool,
        dotall: bool,
        group_index: int,
    ) -> tuple[str]:
        try:
            pattern = re.compile(regex_pattern, regex_flags(case_insensitive, multiline, dotall))
            return (self._extract(pattern, string, mode, group_index),)
        except re.error:
            return ("",)

    @staticmethod
    def _extract(pattern: re.Pattern[str], string: str, mode: str, group_index: int) -> str:
        if mode == "First Match":
            found = pattern.search(string)
            return found.group(0) if found else ""
        if mode == "All Matches":
            # findall gives the groups when the pattern has any; ComfyUI then keeps each first group.
            matches = pattern.findall(string)
            return JOIN.join(m[0] if isinstance(m, tuple) else m for m in matches)
        if mode == "First Group":
            found = pattern.search(string)
            return found.group(group_index) if found and len(found.groups()) >= group_index else ""
        if mode == "All Groups":
            groups = [m.group(group_index) for m in pattern.finditer(string) if m.groups() and len(m.groups()) >= group_index]
            return JOIN.join(groups)
        return ""


class RegexReplace(_StringNode):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_string"
    DESCRIPTION = "Find and replace text using regex patterns."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        flags = _flag_inputs()
        flags["dotall"] = (
            "BOOLEAN",
            {
                "tooltip": "When enabled, the dot (.) character will match any character including newline "
                "characters. When disabled, dots won't match newlines.",
                "default": False,
            },
        )
        count = (
            "INT",
            {
                "tooltip": "Maximum number of replacements to make. Set to 0 to replace all occurrences (default). "
                "Set to 1 to replace only the first match, 2 for the first two matches, etc.",
                "default": 0,
                "min": 0,
                "max": 100,
            },
        )
        return {"required": {"string": TEXT, "regex_pattern": TEXT, "replace": TEXT}, "optional": {**flags, "count": count}}

    def execute(
        self,
        string: str,
        regex_pattern: str,
        replace: str,
        case_insensitive: bool = True,
        multiline: bool = False,
        dotall: bool = False,
        count: int = 0,
    ) -> tuple[str]:
        flags = regex_flags(case_insensitive, multiline, dotall)
        return (re.sub(regex_pattern, replace, string, count=count, flags=flags),)


NODE_CLASS_MAPPINGS = {
    "StringConcatenate": StringConcatenate,
    "StringSubstring": StringSubstring,
    "StringLength": StringLength,
    "CaseConverter": CaseConverter,
    "StringTrim": StringTrim,
    "StringReplace": StringReplace,
    "StringContains": StringContains,
    "StringCompare": StringCompare,
    "RegexMatch": RegexMatch,
    "RegexExtract": RegexExtract,
    "RegexReplace": RegexReplace,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "StringConcatenate": "Concatenate",
    "StringSubstring": "Substring",
    "StringLength": "Length",
    "CaseConverter": "Case Converter",
    "StringTrim": "Trim",
    "StringReplace": "Replace",
    "StringContains": "Contains",
    "StringCompare": "Compare",
    "RegexMatch": "Regex Match",
    "RegexExtract": "Regex Extract",
    "RegexReplace": "Regex Replace",
}
