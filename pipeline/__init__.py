"""Above the model (textebm) and the judges (lm_eval): the evaluation that joins them and the
`textebm` command."""
