"""What the model (textebm) and the judges (lm_eval) both use, below both: numeric precision and
the fused output softmax, files written so that an interruption loses nothing, progress bars and
signal handling. Imports nothing of the project but corpus constants (corpora.vocab)."""
