"""Students: the built-in tiny model and tokenizer, and loading of Hugging Face checkpoints."""
