"""toolformer-router: route agent queries to tool calls with per-tool cached gists and a grammar.

    from toolformer_router import ToolRouter
    router = ToolRouter.from_pretrained("default")
    router.add_tools(tools)
    result = router.route("What's the weather in Paris?")
"""

from .config import CallThresholds, RouterConfig
from .errors import (
    BackboneMismatchError,
    BackboneNotFoundError,
    CheckpointError,
    DuplicateToolError,
    InvalidQueryError,
    InvalidToolError,
    QueryTooLongError,
    SchemaTooLongError,
    ToolRouterError,
    TooManyToolsError,
    UnknownToolError,
)
from .gist_cache import GistCache
from .router import ToolRouter
from .schema import Tool, normalize_tool
from .types import RouteChunk, RouteResult, RouteUsage, ToolCall

__all__ = [
    "BackboneMismatchError",
    "BackboneNotFoundError",
    "CallThresholds",
    "CheckpointError",
    "DuplicateToolError",
    "GistCache",
    "InvalidQueryError",
    "InvalidToolError",
    "QueryTooLongError",
    "RouteChunk",
    "RouteResult",
    "RouteUsage",
    "RouterConfig",
    "SchemaTooLongError",
    "Tool",
    "ToolCall",
    "ToolRouter",
    "ToolRouterError",
    "TooManyToolsError",
    "UnknownToolError",
    "normalize_tool",
]
__version__ = "0.1.0"
