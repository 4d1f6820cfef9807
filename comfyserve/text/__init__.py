"""Text encoding with ComfyUI's semantics: prompt weights, embeddings, 77-token chunking and
the SD1 / SD2 / SDXL CLIP text encoders (transformers' CLIP modules, configs read off the
tensor shapes, tokenizer files shipped in `clip_tokenizer/`).

The seam with the model loaders:

    encoders = split_text_encoders(checkpoint_state_dict)      # {"clip_l": {...}, ...}
    clip = load_clip(encoders, family)                          # family: sd1 | sd2 | sdxl | sdxl_refiner

`clip.py` documents the accepted layouts and what each family produces. transformers is only
imported when a model or the tokenizer is first built.
"""

from comfyserve.text.clip import CLIP, FAMILIES, TextEncoderStack, calculate_weight, load_clip
from comfyserve.text.convert import family_of, identify_encoder, split_text_encoders, to_transformers_layout

__all__ = [
    "CLIP",
    "FAMILIES",
    "TextEncoderStack",
    "calculate_weight",
    "family_of",
    "identify_encoder",
    "load_clip",
    "split_text_encoders",
    "to_transformers_layout",
]
