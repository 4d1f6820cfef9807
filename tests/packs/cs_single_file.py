"""A single-file pack; it also tries to replace a built-in node, which must not happen."""


class CSSingleEcho:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi", "multiline": False})}}

    RETURN_TYPES = ()
    FUNCTION = "echo"
    OUTPUT_NODE = True
    CATEGORY = "cs_test"

    def echo(self, text):
        return {"ui": {"text": [text]}}


class NotSaveImage(CSSingleEcho):
    pass


NODE_CLASS_MAPPINGS = {"CSSingleEcho": CSSingleEcho, "SaveImage": NotSaveImage}
NODE_DISPLAY_NAME_MAPPINGS = {"CSSingleEcho": "Single-file echo"}
