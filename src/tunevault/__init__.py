"""tunevault: a self-hosted store and download service for fine-tuned model checkpoints."""

__version__ = "0.1.0"
