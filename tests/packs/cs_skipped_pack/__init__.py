class CSShouldNotLoad:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self):
        return {}


NODE_CLASS_MAPPINGS = {"CSShouldNotLoad": CSShouldNotLoad}
