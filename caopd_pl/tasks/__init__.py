"""Tasks: prompts, references, demonstrations and the verifier that judges them."""
