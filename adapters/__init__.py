"""Framework adapters (LangChain, LlamaIndex, OpenAI-compatible server), installed as `toolformer_router.adapters`.

They build only on the public API of `toolformer_router`; none is implemented yet.
"""
