"""The output folder of `harness finetune` (plugins/finetune_output.py): a kill at any point of publishing never
makes the folder unusable; the rerun finishes it to the adapter an uninterrupted
run writes, with nothing of ours left in it (its directory hash is part of run ids). Foreign folders are still
refused. Also: the epochs recorded and printed are those actually run, and an exception mid-step (Ctrl-C with no
signal handler) checkpoints the last completed step."""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

import pytest

from harness.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(BaseException):
    """A kill at a chosen point (nothing catches it but the test)."""


def config(out: Path, save_every: int = 100, **settings):
    from harness.plugins.finetune_config import FinetuneConfig

    return FinetuneConfig(model="tiny-vlm", model_args={"base": "random"}, task="phantom-vqa", out=out, limit=8,
                          seed=0, save_every=save_every,
                          overrides={"batch_size": 4, "epochs": 1, "dropout": 0.1, **settings})


def run(out: Path, **settings) -> dict:
    from harness.plugins.finetune_lora import finetune

    return finetune(config(out, **settings), progress=False)


def kill_at_move(monkeypatch, n: int) -> None:
    """Make the n-th rename of publishing (0: staging -> ready; then the files; the manifest last) a kill."""
    from harness.plugins import finetune_output

    real, calls = finetune_output._move, []

    def move(src: Path, dst: Path) -> None:
        if len(calls) == n:
            raise Killed
        calls.append(dst.name)
        real(src, dst)

    monkeypatch.setattr(finetune_output, "_move", move)


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_vlm) -> Path:
    out = tmp_path_factory.mktemp("reference") / "adapter"
    run(out)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_vlm) -> Path:
    """A fine-tune killed as its output was about to be published: the last checkpoint, nothing else."""
    out = tmp_path_factory.mktemp("trained") / "adapter"
    with pytest.MonkeyPatch.context() as monkeypatch:
        kill_at_move(monkeypatch, 0)
        with pytest.raises(Killed):
            run(out)
    assert entries(out) == ["checkpoints"]
    return out


def test_a_kill_at_any_rename_of_publishing_is_finished_by_the_rerun(reference, trained, tmp_path, monkeypatch):
    files = entries(reference)
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors", "manifest.json"]
    for n in range(1, len(files) + 1):  # after the staging folder is complete: each file, manifest last
        out = tmp_path / f"cut{n}"
        shutil.copytree(trained, out)
        kill_at_move(monkeypatch, n)
        with pytest.raises(Killed):
            run(out)
        monkeypatch.undo()
        assert not (out / "manifest.json").exists() and (out / ".output.ready" / "manifest.json").is_file()
        assert not (out / "checkpoints").exists()  # the ready folder holds the result
        manifest = run(out)
        assert not manifest.get("already_done")  # the summary of the training is printed, as the first time
        assert entries(out) == files, n
        assert (out / "adapter_model.safetensors").read_bytes() == (reference / "adapter_model.safetensors"
                                                                    ).read_bytes()
        assert (out / "adapter_config.json").read_bytes() == (reference / "adapter_config.json").read_bytes()


@pytest.mark.parametrize("name, text", [("notes.txt", "mine"), ("README.md", "# my notes on this run\n"),
                                        ("eval.json", "{}"), ("config.json", '{"my_eval_settings": 1}'),
                                        ("vocab.txt", "a\nb\n"), (".output.log", "my log"),
                                        ("adapter_config.json", '{"r": 8, "mine": true}')])
def test_files_beside_our_checkpoints_are_refused_never_deleted(trained, tmp_path, name, text):
    """A resume deleted the user's files whose names an adapter or model folder uses (config.json, vocab.txt, an
    edited adapter_config.json or README.md) as an older harness's interrupted publish, and a plain file named
    like our hidden staging folders. The publish protocol never leaves output files without a manifest, so any
    file there stops the resume and nothing is deleted (our own staging folders excepted)."""
    out = tmp_path / "mixed"
    shutil.copytree(trained, out)
    (out / name).write_text(text)
    (out / ".output.abcd1234").mkdir()  # an incomplete staging folder of ours
    with pytest.raises(UserError, match=rf"holds this fine-tune's checkpoints and also files harness finetune did "
                                        rf"not write \({re.escape(name)}\): move them out .* \(nothing was deleted\)"):
        run(out)
    assert entries(out) == sorted([".output.abcd1234", "checkpoints", name])
    assert (out / name).read_text() == text
    (out / name).unlink()  # moved out: the same command resumes, and removes only the staging folder
    assert run(out)["resumed_at_steps"] == [2] and ".output.abcd1234" not in entries(out)


def test_a_resume_with_another_spelling_of_the_same_base_goes_on(reference, trained, tmp_path):
    """A default typed out (attn=auto) names the same base, as harness run takes it: it was refused as another
    fine-tune, and the training lost."""
    from harness.plugins.finetune_lora import finetune

    out = tmp_path / "spelt"
    shutil.copytree(trained, out)
    (state_file,) = (out / "checkpoints").glob("step-*/state.json")
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "started": "2026-01-02T03:04:05+00:00"}))  # the first attempt's
    cfg = config(out)
    cfg.model_args = {"base": "random", "attn": "auto", "cache": "auto"}
    manifest = finetune(cfg, progress=False)
    assert manifest["resumed_at_steps"] == [2] and manifest["base_model"]["args"] == {"base": "random"}
    assert manifest["started"] == "2026-01-02T03:04:05+00:00"  # when the fine-tune began, not this attempt
    assert (out / "adapter_model.safetensors").read_bytes() == (reference / "adapter_model.safetensors").read_bytes()


def test_files_of_the_users_inside_checkpoints_are_refused_never_deleted(trained, tmp_path):
    """checkpoints/ is removed once the output is written: a note the user kept there (with or without our
    checkpoints beside it) was deleted with it."""
    fresh = tmp_path / "fresh"
    (fresh / "checkpoints").mkdir(parents=True)
    (fresh / "checkpoints" / "my-notes.txt").write_text("important")
    resumed = tmp_path / "resumed"
    shutil.copytree(trained, resumed)
    (resumed / "checkpoints" / "my-notes.txt").write_text("important")
    for out in (fresh, resumed):
        with pytest.raises(UserError, match=r"checkpoints holds files harness finetune did not write "
                                            r"\(my-notes.txt\): move them out .* \(nothing was deleted\)"):
            run(out)
        assert (out / "checkpoints" / "my-notes.txt").read_text() == "important"


def folder_hash(root: Path) -> str:
    """Every file's relative name and bytes under `root` (what is left in the folder, not only the adapter files)."""
    import hashlib

    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(root)).encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    return h.hexdigest()


def test_leftovers_in_a_finished_folder_are_removed_and_leave_its_hash(reference, trained, tmp_path):
    """Killed after the manifest but before checkpoints/ was removed (the old order), or before the empty
    ready folder was: the rerun says "already trained" and the adapter hashes as if nothing had happened."""
    out = tmp_path / "finished"
    shutil.copytree(reference, out)
    clean = folder_hash(out)
    shutil.copytree(trained / "checkpoints", out / "checkpoints")
    (out / ".output.ready").mkdir()
    (out / ".output.zz9_abc1").mkdir()
    (out / ".output.zz9_abc1" / "adapter_model.safetensors").write_bytes(b"x")
    assert folder_hash(out) != clean
    manifest = run(out)
    assert manifest["already_done"]
    assert entries(out) == entries(reference) and folder_hash(out) == clean

    kept = tmp_path / "kept"  # checkpoints kept on purpose stay
    shutil.copytree(reference, kept)
    (kept / "manifest.json").write_text(json.dumps({**json.loads((reference / "manifest.json").read_text()),
                                                    "keep_checkpoints": True}))
    shutil.copytree(trained / "checkpoints", kept / "checkpoints")
    assert run(kept)["already_done"] and (kept / "checkpoints").is_dir()


def test_epochs_recorded_and_printed_are_the_ones_run(tmp_path, tiny_vlm):
    from harness.commands.finetune import report

    out = tmp_path / "short"
    manifest = run(out, epochs=4, max_steps=3)  # 2 steps per epoch: --max-steps stops inside the second
    (stage,) = manifest["stages"]
    assert (stage["steps"], stage["epochs"], stage["epochs_planned"]) == (3, 1.5, 4)
    assert "3 steps, 1.5 of 4 epochs (stopped by --max-steps)" in report(manifest, out)
    assert json.loads((out / "manifest.json").read_text())["stages"][0]["epochs"] == 1.5
    whole = run(tmp_path / "whole", epochs=2)
    assert (whole["stages"][0]["epochs"], whole["steps"]) == (2, 4)


def test_an_interrupt_inside_a_step_checkpoints_the_step_before(reference, tmp_path, monkeypatch):
    """KeyboardInterrupt raised mid-step (no handler: a second Ctrl-C, or training outside the main thread)
    after the forward pass drew dropout masks: the checkpoint is of the last completed step, with the random
    states of that moment, so the rerun ends with the reference adapter."""
    from harness.plugins.finetune_recipes import PeftRecipe

    real_loss, calls = PeftRecipe.loss, []

    def loss(self, batch):
        calls.append(1)
        value = real_loss(self, batch)
        if len(calls) == 2:  # step 2's forward pass
            raise KeyboardInterrupt
        return value

    monkeypatch.setattr(PeftRecipe, "loss", loss)
    out = tmp_path / "cut"
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        run(out, save_every=1000)
    assert signal.getsignal(signal.SIGTERM) is handler  # training's handler is gone again
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000001"]
    monkeypatch.setattr(PeftRecipe, "loss", real_loss)
    manifest = run(out)
    assert manifest["resumed_at_steps"] == [1]
    assert (out / "adapter_model.safetensors").read_bytes() == (reference / "adapter_model.safetensors").read_bytes()


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo ran > ran.txt",))


def test_a_checkpoint_file_holding_code_is_refused_not_run(tmp_path, monkeypatch):
    """A resume unpickled optimizer.pt, scheduler.pt and rng.pt with weights_only=False: a checkpoints folder
    copied from someone else ran their code. States written by harness finetune (numpy's random state too) load."""
    import torch

    from harness.errors import UserError
    from harness.plugins.finetune_checkpoint import rng_state, safe_load

    monkeypatch.chdir(tmp_path)
    torch.save(rng_state(), tmp_path / "rng.pt")
    assert set(safe_load(tmp_path / "rng.pt")) >= {"torch", "numpy", "python"}
    torch.save({"state": {}, "param_groups": [], "x": _RunsCode()}, tmp_path / "optimizer.pt")
    with pytest.raises(UserError, match="optimizer.pt holds more than weights and states"):
        safe_load(tmp_path / "optimizer.pt")
    assert not (tmp_path / "ran.txt").exists()


def test_the_config_hash_an_out_folder_holds_is_read_from_manifest_or_newest_checkpoint(tmp_path):
    """A fine-tune begun before moot settings hashed as absent is resumed under its own hash: finetune reads the
    hash the folder holds (finished manifest, one being published, or the newest checkpoint's state)."""
    from harness.plugins.finetune_output import CHECKPOINTS, MANIFEST, held_config_hash

    out = tmp_path / "out"
    assert held_config_hash(out) is None
    for step, config in ((1, "old"), (2, "new")):
        folder = out / CHECKPOINTS / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps({"config_hash": config}))
    assert held_config_hash(out) == "new"
    (out / MANIFEST).write_text(json.dumps({"config_hash": "done"}))
    assert held_config_hash(out) == "done"


def test_a_refused_out_folder_names_the_settings_that_differ(tmp_path):
    """A rerun into --out with other settings was refused with two config hashes, which say nothing of what the
    user changed; the folder records what its hash hashes, and the refusal names the differing settings as typed."""
    from harness.errors import UserError
    from harness.fingerprint import config_hash
    from harness.plugins.finetune_output import CHECKPOINTS, check_out, settings_differ

    def config(lr: float, limit: int | None, tasks: list[str], dtype: str) -> dict:
        stages = [{"id": task, "split": "train", "n_samples": 8, "fingerprint": f"fp-{task}"} for task in tasks]
        return {"base": {"id": "tiny-vlm", "args": {"dtype": dtype}}, "stages": stages,
                "hyper": {"lr": lr, "stage1_lr": 1e-3}, "method": "lora", "seed": 0, "limit": limit}

    held = config(1e-3, None, ["phantom-caption", "phantom-vqa"], "float32")
    ours = config(1e-3, 8, ["rocov2", "phantom-vqa"], "bfloat16")
    assert settings_differ(held, ours) == ('--model-args dtype "float32" there, "bfloat16" now; --limit unset there, '
                                           '8 now; --stage1-task "phantom-caption" there, "rocov2" now; and 1 more')
    assert settings_differ(held, config(2e-4, None, ["phantom-vqa"], "float32")) == "2 stage(s) there, 1 now"
    assert settings_differ(None, ours) == ""  # a folder of an older harness records no config
    out = tmp_path / "out"
    folder = out / CHECKPOINTS / "step-00000002"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"config_hash": config_hash(held), "config": held}))
    newer = config(1e-3, None, ["phantom-caption", "phantom-vqa"], "float16")
    with pytest.raises(UserError, match=r'holds checkpoints of a different fine-tune \(--model-args dtype "float32" '
                                        r'there, "float16" now\): choose another --out, or delete'):
        check_out(out, config_hash(newer), identity=newer)
    assert check_out(out, config_hash(held), identity=held) == (None, False)  # its own settings: resumed
