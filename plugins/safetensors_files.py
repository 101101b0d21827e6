"""safetensors files of the plugins: a damaged one read is one line naming it, weights holding NaN or infinity are
refused, and bytes written are the same for the same tensors (the library orders its header at random).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import UserError


def load_safetensors(path: Path, what: str) -> dict[str, Any]:
    """The tensors of a .safetensors file; a damaged one (cut short, not safetensors) is one line naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError: the file, not the harness
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{what} {path} cannot be read as safetensors ({first}); expected a complete file "
                        "(copied whole, or written again)") from exc


def check_finite(tensors: dict[str, Any], source: str) -> None:
    """Refuse weights holding NaN or infinity: every answer decoded from them is empty or noise, scored as wrong
    answers without a word."""
    import torch

    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise UserError(f"{source}: tensor {name} holds NaN or infinite values (a diverged or damaged "
                            "training); expected finite weights")


def sorted_safetensors(data: bytes) -> bytes:
    """safetensors bytes with a header of sorted keys: the library writes its metadata in a random order, so the
    same tensors gave other file bytes (another adapter hash, another run id) on every conversion."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n:]
