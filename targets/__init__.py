"""halocut targets, floor 2: devices, topologies and the cost model. Imports only halocut.ir."""

if __name__ != "halocut.targets":  # one module, one name: a second copy would have its own HalocutError and registries
    raise ImportError(f"import halocut.targets, not {__name__}")
