"""Front end: load a model from a name, a ``file.py:factory`` or a module, and trace it to fx.

>>> from halocut.compiler.frontend import load_model
>>> loaded = load_model("lenet5")
>>> loaded.name, loaded.input_shape
('lenet5', (1, 3, 32, 32))
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import io
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import fx, nn

from halocut.compiler.zoo import ZOO
from halocut.ir.errors import HalocutError, one_line
from halocut.ir.files import check_shape, read_bytes, read_text

Shape = tuple[int, ...]
MAX_MODEL_FILE_BYTES = 4 << 20  # a model's .py file
MAX_WEIGHTS_BYTES = 4 << 30  # a state_dict

IMAGENET_SHAPE: Shape = (1, 3, 224, 224)
# torchvision models whose published input size is not 224.
_INPUT_SHAPES: dict[str, Shape] = {"inception_v3": (1, 3, 299, 299)}
# Construction options so that models build without downloading anything.
BUILD_KWARGS: dict[str, dict] = {"googlenet": {"aux_logits": False, "init_weights": True},
                                  "inception_v3": {"aux_logits": False, "init_weights": True}}


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode, its fx graph and the input shape it was analysed with."""

    name: str
    module: nn.Module
    graph_module: fx.GraphModule
    input_shape: Shape
    tracer: str  # "symbolic_trace" or "torch.export"
    source: dict | None = None  # how to load it again (see :func:`model_source`)


def known_models() -> list[str]:
    """Names :func:`load_model` accepts: torchvision classifiers, its segmentation models and halocut's zoo."""
    return sorted(set(torchvision.models.list_models(module=torchvision.models)) | set(segmentation_models())
                  | set(ZOO))


def segmentation_models() -> list[str]:
    """torchvision's segmentation models: built without their auxiliary head, their output is ``out``."""
    return torchvision.models.list_models(module=torchvision.models.segmentation)


class SegmentationOutput(nn.Module):
    """A torchvision segmentation model whose ``{"out": tensor}`` result is returned as the tensor itself.

    Built with ``aux_loss=False`` the dict holds nothing else, so nothing is dropped; the graph then ends in
    one tensor like every other model halocut splits.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def parse_shape(text: str) -> Shape:
    """Parse ``"1,3,224,224"`` (or ``1x3x224x224``) into a tuple of positive ints.

    >>> parse_shape("1,3,224,224")
    (1, 3, 224, 224)
    """
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise HalocutError(f"input shape '{text}': expected comma-separated integers such as 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise HalocutError(f"input shape '{text}': every dimension must be a positive integer")
    return check_shape(shape, "input shape")


def load_model(spec: str | nn.Module, input_shape: Shape | None = None,
               weights: str | Path | None = None, name: str | None = None) -> LoadedModel:
    """Build (or take) a model, put it in eval mode and trace it.

    ``spec`` is a known model name (see :func:`known_models`), a
    ``path/to/file.py:factory`` whose factory returns an ``nn.Module``, or a
    module. ``weights`` is an optional local state_dict file; otherwise the
    weights are the model's random initialisation, drawn with a fixed seed so
    that compiling the same model twice gives the same artifacts.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)  # random-init weights are the same on every load: builds are reproducible
        module, default_shape, model_name = _build(spec)
    if weights is not None:
        _load_weights(module, Path(weights))
    module.eval()
    shape = check_shape(input_shape or default_shape, "input shape" if input_shape else f"model '{model_name}'"
                                                                                       f" input shape")
    graph_module, tracer = trace(module, shape)
    return LoadedModel(name or model_name, module, graph_module, shape, tracer, model_source(spec, weights))


def model_source(spec, weights: str | Path | None = None) -> dict:
    """How to load a model again, as a manifest records it: a name (torchvision or zoo), a file with its
    factory and the file's sha256, or an in-memory module (which cannot be reloaded); the weights file
    and its sha256."""
    if isinstance(spec, nn.Module):
        source = {"kind": "module", "class": type(spec).__name__}
    elif ":" in spec or spec.endswith(".py"):
        path, _, factory = spec.rpartition(":")
        source = {"kind": "file", "path": str(Path(path).resolve()), "factory": factory,
                  "sha256": hashlib.sha256(read_bytes(path, MAX_MODEL_FILE_BYTES)).hexdigest()}
    else:
        source = {"kind": "name", "name": spec}
    if weights is not None:
        source["weights"] = {"path": str(Path(weights).resolve()), "sha256": file_sha256(Path(weights))}
    return source


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trace(module: nn.Module, input_shape: Shape) -> tuple[fx.GraphModule, str]:
    """Trace with ``torch.fx.symbolic_trace``; fall back to ``torch.export``.

    Returns the graph module and the name of the tracer that worked. When both
    fail the error names what each one rejected.
    """
    try:
        return fx.symbolic_trace(module), "symbolic_trace"
    except Exception as fx_error:  # fx raises many types for untraceable constructs
        fx_reason = one_line(fx_error)
    try:
        return export_graph(module, input_shape), "torch.export"
    except Exception as export_error:
        raise HalocutError(
            f"cannot trace {type(module).__name__}: symbolic_trace: {fx_reason}; "
            f"torch.export: {one_line(export_error)}") from None


@contextlib.contextmanager
def _quiet_logging():
    """torch.export logs graph dumps and warnings while it fails; the error we raise says enough."""
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _without_guards(graph_module: fx.GraphModule) -> fx.GraphModule:
    """Drop the shape-guard call ``torch.export`` adds; it checks inputs, it is not part of the model."""
    for node in list(graph_module.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn" and not node.users:
            graph_module.graph.erase_node(node)
    if hasattr(graph_module, "_guards_fn"):
        delattr(graph_module, "_guards_fn")
    graph_module.graph.lint()
    graph_module.recompile()
    return graph_module


def export_graph(module: nn.Module, input_shape: Shape) -> fx.GraphModule:
    """The model as ``torch.export`` sees it: an fx graph of ATen ops, static shapes, no guard node."""
    with torch.no_grad(), _quiet_logging():
        exported = torch.export.export(module, (torch.zeros(input_shape),))
    return _without_guards(exported.module())


def _build(spec: str | nn.Module) -> tuple[nn.Module, Shape, str]:
    if isinstance(spec, nn.Module):
        return spec, getattr(spec, "input_shape", IMAGENET_SHAPE), type(spec).__name__
    if not isinstance(spec, str):
        raise HalocutError(f"model: expected a name, 'file.py:factory' or nn.Module, got {type(spec).__name__}")
    if ":" in spec or spec.endswith(".py"):
        return _from_file(spec)
    if spec in ZOO:
        factory, shape = ZOO[spec]
        return factory(), shape, spec
    if spec in known_models():
        builder = torchvision.models.get_model_builder(spec)
        if spec in segmentation_models():  # no pretrained backbone download, no auxiliary classifier
            return SegmentationOutput(builder(weights=None, weights_backbone=None, aux_loss=False)), \
                _INPUT_SHAPES.get(spec, IMAGENET_SHAPE), spec
        module = builder(weights=None, **BUILD_KWARGS.get(spec, {}))
        return module, _INPUT_SHAPES.get(spec, IMAGENET_SHAPE), spec
    raise HalocutError(f"unknown model '{spec}'; known models: {', '.join(known_models())}")


def _from_file(spec: str) -> tuple[nn.Module, Shape, str]:
    path_text, sep, factory_name = spec.rpartition(":")
    if not sep or not factory_name:
        raise HalocutError(f"model '{spec}': expected 'path/to/file.py:factory'")
    path = Path(path_text)
    if not path.is_file():
        raise HalocutError(f"model '{spec}': file '{path}' does not exist")
    if path.suffix != ".py":
        raise HalocutError(f"model '{spec}': file '{path}' is not a .py file")
    module_name = f"halocut_user_{abs(hash(path.resolve()))}"
    read_text(path, MAX_MODEL_FILE_BYTES)  # size and UTF-8 checked before Python reads it
    source = importlib.util.spec_from_file_location(module_name, path)
    user_module = importlib.util.module_from_spec(source)
    sys.modules[module_name] = user_module
    try:
        source.loader.exec_module(user_module)
    except (Exception, SystemExit) as error:  # a user file that calls sys.exit must not end halocut quietly
        raise HalocutError(f"model '{spec}': importing '{path}' failed: {_why(error)}") from None
    factory = getattr(user_module, factory_name, None)
    if factory is None:
        callables = sorted(n for n, v in vars(user_module).items()
                           if callable(v) and not n.startswith("_") and not inspect.ismodule(v))
        raise HalocutError(f"model '{spec}': '{path}' has no '{factory_name}'; callables there: {', '.join(callables)}")
    if not callable(factory):
        raise HalocutError(f"model '{spec}': '{factory_name}' in '{path}' is not callable")
    try:
        module = factory()
    except (Exception, SystemExit) as error:
        raise HalocutError(f"model '{spec}': calling '{factory_name}()' failed: {_why(error)}") from None
    if not isinstance(module, nn.Module):
        raise HalocutError(f"model '{spec}': '{factory_name}()' returned {type(module).__name__}, not an nn.Module")
    shape = getattr(module, "input_shape", None) or getattr(user_module, "INPUT_SHAPE", None) or IMAGENET_SHAPE
    return module, check_shape(shape, f"model '{spec}': its input shape (input_shape or INPUT_SHAPE)"), \
        f"{path.stem}:{factory_name}"


def _why(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r})"
    return one_line(error)


def _load_weights(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise HalocutError(f"weights '{path}': file does not exist")
    data = read_bytes(path, MAX_WEIGHTS_BYTES)
    try:
        with warnings.catch_warnings():  # torch's own warning (with colour codes) would repeat the error
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:
        raise HalocutError(f"weights '{path}': not a readable state_dict (plain tensors only, weights_only): "
                           f"{one_line(error, first=True, limit=120)}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise HalocutError(f"weights '{path}': holds a {type(state).__name__}, not a state_dict")
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise HalocutError(f"weights '{path}': {one_line(error)}") from None
