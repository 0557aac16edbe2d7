"""Pretrained checkpoints: Hugging Face model directories (safetensors) and GGUF files, read into
and written out of the policies' parameter trees."""
