"""halocut passes, floor 2: graph transformations (fold, halo, slice, cut, lower). Imports only halocut.ir."""

if __name__ != "halocut.passes":  # one module, one name: a second copy would have its own HalocutError and registries
    raise ImportError(f"import halocut.passes, not {__name__}")
