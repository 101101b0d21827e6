"""`harness finetune` flag mistakes name the flag the user gave (--stage1-data-dir, not --data-dir)."""

from __future__ import annotations

import os
import subprocess
import sys

from cli_helpers import error_line


def finetune(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "finetune", "--model", "tiny-vlm", "--task",
                           "phantom-vqa", "--out", "adapters/demo", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_missing_stage1_data_dir_names_its_own_flag(tmp_path):
    missing = tmp_path / "data" / "rocov2"
    line = error_line(finetune("--stage1-task", "rocov2", "--stage1-data-dir", str(missing), cwd=tmp_path))
    assert line == (f"error: --stage1-data-dir {missing}: no such directory "
                    "(expected the folder with your local copy of the dataset)")
    assert not (tmp_path / "adapters").exists()


def test_data_dirs_that_are_missing_files_or_wrong(tmp_path):
    line = error_line(finetune("--data-dir", "data/vqa", cwd=tmp_path))  # relative: shown with where it points
    assert line.startswith(f"error: --data-dir data/vqa ({tmp_path / 'data' / 'vqa'}): no such directory")
    (tmp_path / "notes.txt").write_text("x")
    line = error_line(finetune("--stage1-task", "rocov2", "--stage1-data-dir", "notes.txt", cwd=tmp_path))
    assert line.startswith("error: --stage1-data-dir notes.txt") and "not a directory" in line
    # a folder without the stage-1 task's files: the task's own message, with the stage-1 flags
    (tmp_path / "empty").mkdir()
    line = error_line(finetune("--stage1-task", "rocov2", "--stage1-data-dir", "empty", cwd=tmp_path))
    assert line.startswith("error: --stage1-task rocov2: --stage1-data-dir empty matches no local format")
    assert "test_captions.csv" in line
    line = error_line(finetune("--stage1-task", "rocov2", "--stage1-source", "nope", cwd=tmp_path))
    assert "--stage1-task rocov2: task 'rocov2' has no source 'nope'" in line
    line = error_line(finetune("--stage1-task", "rocv2", cwd=tmp_path))
    assert "--stage1-task rocv2: unknown task 'rocv2'. Did you mean 'rocov2'?" in line


def test_stage1_flags_without_a_stage1_task(tmp_path):
    (tmp_path / "rocov2").mkdir()
    line = error_line(finetune("--stage1-data-dir", "rocov2", cwd=tmp_path))
    assert line == "error: --stage1-data-dir given without --stage1-task (the captioning task of stage 1)"
    line = error_line(finetune("--stage1-lr", "1e-4", "--stage1-epochs", "2", cwd=tmp_path))
    assert line == "error: --stage1-lr, --stage1-epochs given without --stage1-task (the captioning task of stage 1)"


def test_stage1_hub_task_offline_names_the_stage1_flag(tmp_path):
    # rocov2 without a data folder reads the hub copy; offline (as in the tests) that fails, and the way out
    # the message gives is stage 1's own flag
    line = error_line(finetune("--stage1-task", "rocov2", cwd=tmp_path))
    assert line.startswith("error: --stage1-task rocov2: cannot load hub dataset 'eltorio/ROCOv2-radiology'")
    assert line.endswith("or pass --stage1-data-dir with a local copy")
    assert not (tmp_path / "adapters").exists()


def test_stage1_must_be_another_task_of_captions_or_reports(tmp_path):
    line = error_line(finetune("--stage1-task", "phantom", cwd=tmp_path))  # phantom-vqa under its alias
    assert line == ("error: --stage1-task phantom is the same task as --task phantom-vqa; stage 1 is the "
                    "captioning stage")
    line = error_line(finetune("--task", "phantom-caption", "--stage1-task", "phantom-vqa", cwd=tmp_path))
    assert "--stage1-task phantom-vqa is a VQA task; stage 1 trains on captions or reports" in line


def test_a_zero_learning_rate_is_refused(tmp_path):
    line = error_line(finetune("--lr", "0", cwd=tmp_path))
    assert line.startswith("error: --lr 0 would train nothing")


def test_an_end_rate_above_the_peak_rate_is_refused(tmp_path):
    line = error_line(finetune("--lr", "1e-4", "--lr-end", "1e-3", cwd=tmp_path))
    assert line == ("error: --lr-end 0.001 is above --lr 0.0001: the schedule decays from --lr to --lr-end, so "
                    "expected --lr-end <= --lr")
    line = error_line(finetune("--task", "phantom-vqa", "--stage1-task", "phantom-caption", "--stage1-lr", "1e-4",
                               cwd=tmp_path))  # tiny-vlm's stage-1 end rate is 5e-4
    assert line.startswith("error: --stage1-lr-end 0.0005 (this model's default) is above --stage1-lr 0.0001")
    assert not (tmp_path / "adapters").exists()


def test_an_out_that_is_a_file_is_named_as_such(tmp_path):
    (tmp_path / "adapters").mkdir()
    (tmp_path / "adapters" / "demo").write_text("not a folder")
    line = error_line(finetune("--model-args", "base=random", cwd=tmp_path))
    assert line == "error: --out adapters/demo is a file; expected a new or empty folder for the adapter"


def test_a_base_folder_that_does_not_exist_is_named_as_such(tmp_path):
    """An absolute or home path was reported as an unknown model id, listing every model."""
    for model in (str(tmp_path / "models" / "nope"), "~/no-such-model-folder", "./nope"):
        proc = subprocess.run([sys.executable, "-m", "harness", "finetune", "--model", model, "--task", "phantom-vqa",
                               "--out", "out"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert error_line(proc) == (f"error: --model {model}: no such folder (expected a model id of harness list "
                                    "models, a checkpoint folder or a hub id such as org/name)")
        assert not (tmp_path / "out").exists()


def test_help_gives_each_models_own_defaults(tmp_path):
    """tiny-vlm's rank, alpha, rates and epochs were shown as the generic defaults."""
    proc = subprocess.run([sys.executable, "-m", "harness", "finetune", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, env={**os.environ, "COLUMNS": "200"})
    text = " ".join(proc.stdout.split())
    for expected in ("(default 64; tiny-vlm 128)", "LoRA alpha (default 16; tiny-vlm 128)",
                     "(default 3e-5; tiny-vlm 0.001)", "epochs of the main task (default 3, PeFoMed: 50; tiny-vlm 8)"):
        assert expected in text, expected


def test_nan_and_infinite_rates_and_out_of_range_seeds_are_refused_before_training(tmp_path):
    """--lr inf trained (for minutes without --max-steps) and then could not write manifest.json ('the value at
    stages.0.lr is inf'); a negative seed failed in numpy once the model had loaded."""
    for args, expected in [
        (("--lr", "inf", "--lr-end", "0"), "--lr must be a finite number > 0, got inf"),
        (("--stage1-lr-end", "nan"), "--stage1-lr-end must be a finite number >= 0, got nan"),
        (("--alpha", "inf"), "--alpha must be a finite number > 0, got inf"),
        (("--alpha", "-1"), "--alpha must be a finite number > 0, got -1.0"),
        (("--weight-decay", "nan"), "--weight-decay must be a finite number >= 0, got nan"),
        (("--max-grad-norm=-inf",), "--max-grad-norm must be a finite number >= 0, got -inf"),
        (("--dropout", "nan"), "--dropout must be in [0, 1), got nan"),
        (("--seed", "-1"), "--seed must be a whole number from 0 to 9223372036854775807 (a 64-bit seed), got -1"),
    ]:
        assert error_line(finetune("--model-args", "base=random", *args, cwd=tmp_path)) == f"error: {expected}"
    assert not (tmp_path / "adapters").exists()


def test_settings_that_would_change_nothing_are_refused_before_training(tmp_path):
    """--alpha 0 trained an adapter with no effect (LoRA's update is alpha/rank * BA); --method full recorded a
    rank, alpha and dropout it never used; --schedule constant recorded an end rate it never reached; a
    micro-batch above the batch was silently cut to it."""
    for args, expected in [
        (("--alpha", "0"), "--alpha 0 scales the LoRA update to nothing (an adapter with no effect, which "
                           "`harness run --adapter` refuses); expected alpha > 0"),
        (("--method", "full", "--rank", "8", "--dropout", "0.1"),
         "--rank, --dropout given with --method full, which trains the weights themselves (no LoRA adapter); drop "
         "them, or use --method lora"),
        (("--schedule", "constant", "--lr-end", "1e-5"),
         "--lr-end given with --schedule constant, which keeps the peak rate (nothing decays); drop it, or use "
         "--schedule cosine or linear"),
        (("--method", "full", "--alpha", "0"),  # the flag is what is wrong, not its value
         "--alpha given with --method full, which trains the weights themselves (no LoRA adapter); drop it, or "
         "use --method lora"),
        (("--batch-size", "4", "--micro-batch-size", "8"),
         "--micro-batch-size 8 is above --batch-size 4: a micro-batch is a part of a batch (gradient "
         "accumulation); expected at most the batch size"),
        (("--micro-batch-size", "16",),
         "--micro-batch-size 16 is above the batch size (this model's default) 8: a micro-batch is a part of a "
         "batch (gradient accumulation); expected at most the batch size"),
    ]:
        assert error_line(finetune("--model-args", "base=random", *args, cwd=tmp_path)) == f"error: {expected}"
    assert not (tmp_path / "adapters").exists()


def test_settings_the_data_makes_moot_are_the_same_fine_tune(tmp_path, tiny_vlm):
    """`--max-steps` above the steps there are and `--micro-batch-size` equal to the batch train the same weights,
    but were another fine-tune: the same --out refused the command without them (a resume after a kill too). A
    two-stage command with a prompt the main task lacks said a note about stage 1 before its one error."""
    base = ["--model-args", "base=random", "--limit", "8", "--batch-size", "4", "--epochs", "1", "--no-progress"]
    first = finetune(*base, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = finetune(*base, "--max-steps", "100", "--micro-batch-size", "4", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already trained" in again.stdout + again.stderr, again.stdout + again.stderr
    other = finetune(*base, "--max-steps", "1", cwd=tmp_path)  # one step of two: another fine-tune
    assert other.returncode == 2 and "holds a different fine-tune (--max-steps unset there, 1 now)" in other.stderr
    proc = finetune(*base, "--stage1-task", "phantom-caption", "--prompt", "short", "--out", "adapters/x",
                    cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "'short'" in proc.stderr


def test_a_diverging_fine_tune_stops_at_the_first_non_finite_loss(tmp_path, tiny_vlm):
    """A loss gone NaN trained on to the last step, then failed to write manifest.json ('the value at
    loss_curve.3.loss is nan ... a file written by an older version, or a plugin, holds it'), and so did every rerun."""
    result = finetune("--model-args", "base=random", "--limit", "16", "--batch-size", "2", "--epochs", "1",
                      "--lr", "1e6", "--max-grad-norm", "0", "--save-every", "1", "--no-progress", cwd=tmp_path)
    line = error_line(result)
    assert line.startswith("error: the loss of step ") and " (phantom-vqa) is nan: the fine-tune diverged, and the " \
        "learning rate is too high for it (lower --lr, or keep --max-grad-norm on); delete adapters/demo and train " \
        "again with other settings" in line, line
    step = int(line.split("the loss of step ")[1].split()[0])
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "adapters" / "demo" / "checkpoints").glob("step-*"))
    assert step < 8 and saved and max(saved) == step - 1  # stopped there: no step after it trained or saved
    assert not (tmp_path / "adapters" / "demo" / "manifest.json").exists()
