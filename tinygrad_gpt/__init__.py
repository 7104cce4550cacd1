"""tinygrad_gpt: a small GPT built from scratch on NumPy, every gradient written by hand."""
