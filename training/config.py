"""Training configuration: one pydantic model, loaded from YAML (`configs/*.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

StageName = Literal["autoencode", "contrastive", "calling", "selection"]
Trainable = Literal["new_modules", "lora", "full"]


class StageConfig(BaseModel):
    """One curriculum stage. Defaults follow the reference design (design.md)."""

    model_config = ConfigDict(extra="forbid")

    name: StageName
    steps: int | None = Field(None, ge=1)
    """Optimizer steps; or give `epochs` (over the stage's examples)."""
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)
    """Cap on steps whichever way they are set (a time budget)."""
    lr: float = 1e-4
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_steps: int | None = None
    warmup_ratio: float = 0.05
    ae_weight: float = 0.0
    """Weight of the auxiliary auto-encoding loss (stage 1 trains on it alone)."""
    ae_fraction: float = 1.0
    """Share of batches that also compute the auxiliary AE loss."""
    contrastive_weight: float = 0.0
    decision_weight: float = 0.0
    """Weight of the balanced call/no-call loss at the first answer position (0: only "no call" examples
    train it, with weight 1, and calls learn it from their first token's cross-entropy)."""
    list_step_weight: float = 0.0
    """Weight of the extra cross-entropy at the tokens where a call list goes on (`,`) or ends (`]`)."""
    agent_turns: int = Field(0, ge=0)
    """Stage "calling": this many later steps of agent turns (results in; the calls left, or no call), built from
    the training examples (`training.agent_turns`, seeded), join the stage's examples."""
    masked_examples: int = Field(0, ge=0)
    """Stage "calling": this many training examples again with every tool and parameter name replaced by a random
    identifier (Hammer-style function masking, `training.everyday.mask_names`, seeded): the right tool can then
    only be told by its description."""
    composed_examples: int = Field(0, ge=0)
    """Stage "calling": this many two-call examples, each two one-call training examples' requests in one user
    message (`training.data.compose_multi_call`, seeded), join the stage's examples (the live data has few
    multi-call examples, and a decoder trained on it ends every list after one call)."""
    train_only: list[Literal["gist_pooling", "cross_attention", "selector"]] | None = None
    """The new modules this stage updates (None: every trainable parameter). E.g. ["cross_attention"] keeps the
    gists, and so a selector trained on them, as they are."""
    max_minutes: float | None = Field(None, gt=0)
    """Wall-time cap of the stage (a lease on a lent device): it ends early, saved, and the log says where."""
    end_at_step: int | None = Field(None, ge=1)
    """End the stage after this many steps while its learning-rate schedule still spans all of them: replays,
    on any machine, a stage that `max_minutes` cut at that step."""
    gate_lr: float | None = None
    """Learning rate of the tanh gates (default: `lr`); gates start at 0 and move slowly at a low lr."""
    negatives: int = 7
    selection_candidates: Literal["example", "batch"] = "batch"
    """Stage "selection": score each query against its example's own tools, or against every tool in the batch
    (more negatives)."""
    temperature: float = 0.07

    @model_validator(mode="after")
    def _length(self) -> StageConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of steps or epochs")
        return self


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = ["q_proj", "v_proj"]


class TrainConfig(BaseModel):
    """Everything `toolformer-router train` needs; relative paths resolve against the config file."""

    model_config = ConfigDict(extra="forbid")

    backbone: str = "default"
    router: dict[str, Any] = Field(default_factory=dict)
    """`RouterConfig` fields that differ from the defaults."""
    data_dir: str = "data/prepared"
    prepare: dict[str, Any] = Field(default_factory=dict)
    """Arguments of `training.data.prepare` when `data_dir` has not been prepared yet."""
    output_dir: str = "runs/default"
    init_from: str | None = None
    """Start from these weights: a checkpoint folder, or another recipe's YAML, whose checkpoint is trained first
    when it is missing (a recipe that builds on another: one command trains both)."""
    seed: int = 0
    trainable: Trainable = "new_modules"
    """What the optimizer updates: only the new modules (frozen backbone), + LoRA adapters, or everything."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    cache_encoder_outputs: bool = True
    """CPU-feasible mode: with a frozen encoder, each schema's encoder states are computed once."""
    max_train_examples: int | None = None
    grad_clip: float = 1.0
    gradient_checkpointing: bool = True
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """"auto": bf16 on a GPU, fp32 on the CPU."""
    max_seq_len: int = 2048
    split_list_steps: bool = False
    """Tokenize each answer's calls apart from the `,` and `]` between and after them, so that a call list goes on
    or ends at one token after the call (`"}}` `,` / `]`). Otherwise BPE merges fold the decision into the token
    that closes the last value (`"}` before `},` against `"` before `}}]`), and a decoder trained on one-call lists
    learns to end every list there."""
    checkpoint_every: int = Field(50, ge=1)
    log_every: int = Field(10, ge=1)
    stages: list[StageConfig]

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        raw = yaml.safe_load(path.read_text()) or {}
        config = cls.model_validate(raw)
        for field in ("data_dir", "output_dir", "init_from"):
            if getattr(config, field) is None:
                continue
            value = Path(getattr(config, field))
            if not value.is_absolute():
                setattr(config, field, str((path.parent / value).resolve()))
        return config
