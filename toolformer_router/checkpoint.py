"""Checkpoint folders: `config.json` (a `RouterConfig`) + `router.safetensors` (only what training changed).

The backbone is never stored: it is loaded from `config.backbone` and checked against the signature
recorded at save time, so a checkpoint cannot be silently applied to another model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import RouterConfig
from .errors import BackboneMismatchError, CheckpointError
from .modeling import ToolRouterModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "router.safetensors"
_SIGNATURE_FIELDS = (
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "vocab_size",
)


def backbone_signature(backbone_config: Any) -> dict[str, Any]:
    """The backbone facts a checkpoint depends on."""
    return {name: getattr(backbone_config, name, None) for name in _SIGNATURE_FIELDS}


def read_config(folder: str | Path) -> RouterConfig:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a router checkpoint: {CONFIG_NAME} is missing")
    try:
        return RouterConfig.model_validate(orjson.loads(path.read_bytes()))
    except (orjson.JSONDecodeError, ValidationError) as error:
        raise CheckpointError(f"{path} is not a valid router config: {error}") from None


def save_checkpoint(
    model: ToolRouterModel, folder: str | Path, *, extra_state: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write config.json and the new modules' weights (plus `extra_state`, e.g. changed backbone tensors)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.model_copy(update={"backbone_signature": backbone_signature(model.backbone_config)})
    tensors = {**model.new_state_dict(), **(extra_state or {})}
    tensors = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).detach().cpu().contiguous().clone()
               for k, v in tensors.items()}
    save_file(tensors, folder / WEIGHTS_NAME, metadata={"format": "pt"})
    options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS  # thresholds_by_tool_count has int keys
    (folder / CONFIG_NAME).write_bytes(orjson.dumps(config.model_dump(), option=options))
    return folder


def load_weights(model: ToolRouterModel, folder: str | Path, *, allow_missing: bool = False) -> list[str]:
    """Load a checkpoint's tensors into `model`; every new-module tensor must be present (unless
    `allow_missing`: training from a checkpoint onto a model with more modules) and fit. Returns the missing."""
    folder = Path(folder)
    config = read_config(folder)
    expected_signature = config.backbone_signature
    actual_signature = backbone_signature(model.backbone_config)
    if expected_signature is None:
        raise CheckpointError(f"checkpoint {folder}: config.json has no backbone_signature, so the backbone it was "
                              f"trained on cannot be checked (`save_pretrained` writes one)")
    if expected_signature != actual_signature:
        diff = {k: (expected_signature.get(k), actual_signature.get(k)) for k in actual_signature
                if expected_signature.get(k) != actual_signature.get(k)}
        raise BackboneMismatchError(
            f"checkpoint {folder} was trained on another backbone (checkpoint vs loaded: {diff})"
        )
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder}: {WEIGHTS_NAME} is missing")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {error}") from None
    own = model.state_dict()
    required = set(model.new_state_dict())
    missing = sorted(required - tensors.keys())
    unknown = sorted(tensors.keys() - own.keys())
    if (missing and not allow_missing) or unknown:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unknown {unknown[:5]}{'…' if len(unknown) > 5 else ''}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != own[name].shape:
            raise CheckpointError(f"checkpoint {path}: {name} has shape {tuple(tensor.shape)}, "
                                  f"the model expects {tuple(own[name].shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"checkpoint {path}: {name} holds NaN or infinite values")
    with torch.no_grad():
        for name, tensor in tensors.items():
            own[name].copy_(tensor.to(own[name].dtype))
    return missing
