"""Text encoding with ComfyUI's semantics: prompt weights, embeddings, 77-token chunking and
the CLIP text encoders. transformers is only imported when a model or the tokenizer is built."""
