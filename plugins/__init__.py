"""Built-in model and fine-tune plugins (installed as `harness.plugins`; registered by `builtin.py`).

PEFT reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model, which prints a
FutureWarning on every adapter load that users can do nothing about: it is silenced here, once.
"""

import warnings

warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
