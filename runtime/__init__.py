"""halocut runtime, floor 3: reference executor, simulator, Ray execution, profiling, benchmarking."""

if __name__ != "halocut.runtime":  # one module, one name: a second copy would have its own HalocutError and registries
    raise ImportError(f"import halocut.runtime, not {__name__}")
