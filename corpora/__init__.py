"""Corpora for textebm: where the files are, how text is normalised, vocabularies and batches."""


class CorpusError(Exception):
    """A problem with the user's data, reported as one line (no traceback) by the CLI."""
