"""Recorded experiments behind the defaults (`python -m studies.NAME`), their results in
studies/results/ and their tables in docs/."""
