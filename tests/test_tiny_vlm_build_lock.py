"""Two processes needing the same tiny-vlm build on a fresh cache (array jobs, two pytest workers) build it once:
the second waits for the first, saying so, then uses its build. Before, both built it (the pretrained base: about
6 CPU minutes each) and the slower one threw its copy away.

The first process is played by a subprocess holding the build lock until the test lets it build; the order is
forced, not timed.
"""

from __future__ import annotations

import subprocess
import sys
import threading

from test_api_interrupt import wait_until

HOLDER = """
import sys
from pathlib import Path
from harness.folder_lock import exclusive
from harness.plugins import tiny_vlm
final = Path(sys.argv[1]) / "tiny-vlm" / f"{tiny_vlm.version()}-random"
final.parent.mkdir(parents=True, exist_ok=True)
with exclusive(final.parent, f".{final.name}.lock", transient=True):
    print("held", flush=True)
    sys.stdin.readline()
    tiny_vlm._build_into(final, tiny_vlm.build_tiny_vlm)
"""

WAITER = """
import sys
from pathlib import Path
from harness.plugins.tiny_vlm import ensure_tiny_vlm
print(ensure_tiny_vlm(Path(sys.argv[1]), "random"), flush=True)
"""


def test_a_second_process_waits_for_the_build_and_uses_it(tmp_path):
    from harness.plugins.tiny_vlm import version

    cache = tmp_path / "cache"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    waiter = None
    try:
        assert holder.stdout.readline().strip() == "held"
        waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(cache)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        said: list[str] = []
        threading.Thread(target=lambda: said.extend(waiter.stderr), daemon=True).start()  # type: ignore[arg-type]
        wait_until(lambda: any("is using the tiny-vlm build" in line for line in said) or waiter.poll() is not None,
                   "the second process to wait or finish", limit=120)
        assert waiter.poll() is None, "".join(said)  # it waits instead of building a copy of its own
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait(timeout=300) == 0
        final = cache / "tiny-vlm" / f"{version()}-random"
        built = (final / "model.safetensors").stat().st_ino
        out, _ = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, "".join(said)
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert out.strip() == str(final) and (final / "model.safetensors").stat().st_ino == built
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]  # no copy, no temporary folder left
