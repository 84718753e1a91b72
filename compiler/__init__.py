"""halocut compiler, floor 5: front end and zoo, the compile driver, the work behind each command, the CLI."""

if __name__ != "halocut.compiler":  # one module, one name: a second copy would have its own HalocutError and registries
    raise ImportError(f"import halocut.compiler, not {__name__}")
