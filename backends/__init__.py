"""halocut backends, floor 2: emitters (ONNX, TVM, torch) and the manifest format. Imports only halocut.ir."""

if __name__ != "halocut.backends":  # one module, one name: a second copy would have its own HalocutError and registries
    raise ImportError(f"import halocut.backends, not {__name__}")
