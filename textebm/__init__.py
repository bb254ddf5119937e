"""textebm: latent-space energy-based prior models for text (Pang et al., NeurIPS 2020).

`textebm.load(run_dir)` returns a `TextEBM` (textebm/api.py): sample, infer, reconstruct,
interpolate. It is imported on first use, so `import textebm.config` stays light.
"""

__all__ = ["load", "TextEBM"]


def __getattr__(name):
    if name in __all__:
        from textebm import api
        return getattr(api, name)
    raise AttributeError(f"module 'textebm' has no attribute {name!r}")
