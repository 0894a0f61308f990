"""Training: the DeepSpeed trainer, deterministic batch plans, safetensors checkpoints."""
