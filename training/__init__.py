"""Training data, curriculum and evaluation, installed as `toolformer_router.training` (not implemented yet)."""
