"""MedVLM Harness: reproducible evaluation of medical vision-language models.

The package is deliberately light at import time: nothing here imports torch, transformers,
datasets or vllm. Heavy libraries are imported inside the plugins that need them.
"""

__version__ = "0.1.0"
