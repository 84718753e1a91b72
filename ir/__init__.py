"""halocut ir, floor 1: the shared vocabulary (errors, op kinds, LayerInfo, graph queries, regions, the Plan,
part names). Imports nothing of halocut."""

if __name__ != "halocut.ir":  # one module, one name: a second copy would have its own HalocutError and registries
    raise ImportError(f"import halocut.ir, not {__name__}")
