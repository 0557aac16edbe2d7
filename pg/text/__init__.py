"""Text (layer 1): tokenizers, chat templates and prompt batches for real language models."""
