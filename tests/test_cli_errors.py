"""User mistakes give one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--model", "prio", "--task", "phantom-vqa"], "unknown model 'prio'. Did you mean 'prior'?"),
        (["run", "--model", "prior", "--task", "slak"], "unknown task 'slak'. Did you mean 'slake'?"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exactt"], "Did you mean 'exact'?"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exact", "--convention", "nope"],
         "its conventions: pefomed, llava-med, multimedeval"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--prompt", "nope"], "no prompt variant 'nope'"),
        (["run", "--model", "prior", "--task", "slake", "--data-dir", "/nonexistent/slake"], "/nonexistent/slake"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--model-args", "bogus"], "expected KEY=VALUE"),
        (["score", "/nonexistent/preds.jsonl"], "does not exist"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--judge", ""],
         "--judge '': no judge id; expected e.g. --judge exact (see harness list judges)"),
        (["score", ".", "--task-type", "report", "--model-name", "m"],
         "--task-type and --model-name describe a predictions file; . is a run directory, whose run.json says"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--adapter", "."],
         "--adapter .: model 'prior' does not load adapters (models that do: "),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--model-args", "by=none", "--model-args", "by=x"],
         "--model-args: by given twice ('none' and 'x'); give it once"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--judge", "gpt4", "--judge-timeout", "5",
          "--judge-arg", "timeout=9"],
         "--judge-arg timeout='9' contradicts --judge-timeout (5.0 given before)"),
        (["run", "--model", "prior", "--task", "phantom-report", "--judge", "lexical", "--judge-arg",
          "rouge_stemmer=true", "--judge-arg", "rouge_stemmer=false"],
         "--judge-arg rouge_stemmer='false' contradicts --judge-arg rouge_stemmer ('true' given before)"),
    ],
)
def test_user_mistakes_are_one_line(args, expected):
    proc = cli(*args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]


def test_missing_data_dir_files_are_listed(tmp_path):
    (tmp_path / "unrelated.txt").write_text("x")
    proc = cli("run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "VQA_RAD Dataset Public.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unusable_paths_and_settings_are_one_line(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    run = ["run", "--model", "prior", "--task", "phantom-vqa", "--limit", "3", "--no-progress"]
    cases = [
        ([*run, "--output", str(a_file)], f"cannot use {a_file}: a file is in the way where a folder is needed"),
        ([*run, "--runs-dir", str(a_file)], f"cannot use {a_file}/"),
        ([*run, "--output", str(tmp_path / "runs"), "--max-new-tokens", "0"], "max_new_tokens=0"),
        ([*run, "--output", str(tmp_path / "runs"), "--temperature", "-1"], "temperature=-1.0"),
        ([*run, "--output", str(tmp_path / "runs"), "--batch-size", "-1"], "--batch-size -1: expected at least 1"),
        ([*run, "--output", str(tmp_path / "edited")], f"{tmp_path / 'edited' / 'run.json'}: not valid JSON"),
    ]
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "run.json").write_text('{"run_id": "x",')
    for args, expected in cases:
        proc = cli(*args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert expected in lines[0]
    assert a_file.read_text() == "x"


def test_nan_infinite_and_out_of_range_numbers_are_refused_before_any_work(tmp_path):
    """--temperature inf generated and then failed to write run.json ('not written ... inf'), and timeout=nan made
    every API call fail after 7 attempts: each is one line naming the setting, before a run folder is made."""
    runs = tmp_path / "runs"
    run = ["run", "--task", "phantom-vqa", "--limit", "2", "--no-progress", "--runs-dir", str(runs)]
    def api(arg: str) -> list[str]:
        return ["--model", "openai-compatible", "--model-args", f"base_url=http://127.0.0.1:9/v1,model=x,{arg}"]

    cases = [
        ([*run, "--model", "prior", "--temperature", "inf"], "generation setting temperature=inf (command line or "
         "task 'phantom-vqa'): expected a finite number >= 0 (0: greedy)"),
        ([*run, "--model", "prior", "--temperature", "nan"], "temperature=nan"),
        ([*run, "--model", "prior", "--seed", "99999999999999999999999"], "generation setting "
         "seed=99999999999999999999999 (command line or task 'phantom-vqa'): expected a whole number from 0 to "
         "9223372036854775807 (a 64-bit seed)"),
        ([*run, *api("timeout=nan")], "--model-args timeout='nan': expected a finite number >= 0.001"),
        ([*run, *api("retry_base_delay=inf")], "--model-args retry_base_delay='inf': expected a finite number"),
        (["convert", "pefomed-checkpoint", str(tmp_path / "x.pth"), "--out", str(tmp_path / "converted"),
          "--lora-alpha", "nan"], "--lora-alpha nan: must be a finite number > 0"),
    ]
    for args, expected in cases:
        proc = cli(*args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert expected in lines[0]
    assert not runs.exists() and not (tmp_path / "converted").exists()


def test_a_limit_whose_images_are_all_missing_fails_its_samples_when_the_image_folder_is_there(tmp_path,
                                                                                                shared_data):
    """--limit 5 picks five questions about one SLAKE image; that image is missing but others are in imgs/: the
    samples fail alone, as any missing image's do (the run was refused as if imgs/ were not there)."""
    data = tmp_path / "slake"
    data.mkdir()
    for name in ("train.json", "validate.json", "test.json"):
        (data / name).symlink_to(shared_data / "slake" / name)
    (data / "imgs" / "xmlab93").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(data / "imgs" / "xmlab93" / "source.jpg")
    proc = cli("run", "--model", "prior", "--task", "slake", "--data-dir", str(data), "--limit", "5",
               "--no-progress", "--output", str(tmp_path / "run"), "--judge", "exact")
    assert "no image file" not in proc.stderr, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all("xmlab102" in row["error"] for row in rows)
    assert proc.returncode == 2  # every selected sample failed, as README says


def test_decoding_flags_on_the_prior_are_said_to_be_ignored_and_make_no_other_run(tmp_path):
    """The prior decodes nothing: --temperature 0.5 gave the same answers under another run id (another row)."""
    run = ["run", "--model", "prior", "--task", "phantom-vqa", "--limit", "3", "--no-progress", "--judge", "exact",
           "--runs-dir", str(tmp_path / "runs")]
    assert cli(*run).returncode == 0
    proc = cli(*run, "--temperature", "0.5", "--max-new-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    assert ("warning: --max-new-tokens 4 and --temperature 0.5 ignored: model 'prior' decodes nothing"
            in proc.stderr)
    proc = cli(*run, "--prompt", "pefomed")  # it reads no prompt either
    assert proc.returncode == 0, proc.stderr
    assert ("warning: --prompt pefomed ignored: model 'prior' reads no prompt (its answers are learnt from the "
            "training split), so this is the run with the default prompt") in proc.stderr
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "run.json").read_text())["generation"]["temperature"] == 0.0
    assert json.loads((run_dir / "run.json").read_text())["prompt"]["variant"] == "default"


def test_device_flags_are_checked_or_said_to_be_ignored(tmp_path):
    """A model with no local device warns that --device/--dtype do nothing; local models check the values."""
    run = ["run", "--task", "phantom-vqa", "--limit", "2", "--no-progress", "--judge", "exact"]
    proc = cli(*run, "--model", "prior", "--device", "cuda", "--dtype", "bf16", "--output", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    assert "warning: --device cuda and --dtype bf16 ignored: model 'prior' runs on no local device" in proc.stderr
    for model in ("tiny-vlm", "pefomed"):
        proc = cli(*run, "--model", model, "--device", "gpu0", "--output", str(tmp_path / model))
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0] == "error: --device gpu0: not a torch device (cpu, cuda, cuda:1, mps)"
        assert not (tmp_path / model).exists()


def test_data_dir_without_its_images_is_refused_before_loading_a_model(tmp_path, shared_data):
    """The real SLAKE annotation files without the imgs/ folder: one line naming the first missing file. A
    --runs-dir the command created is not left behind, empty (a folder that was there stays)."""
    runs = tmp_path / "new" / "runs"
    proc = cli("run", "--model", "prior", "--task", "slake", "--data-dir", str(shared_data / "slake"),
               "--limit", "5", "--no-progress", "--runs-dir", str(runs))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "no image file of task 'slake' exists" in lines[0]
    assert "(the first it needs is " in lines[0]
    assert str(shared_data / "slake" / "imgs") in lines[0]
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    proc = cli("run", "--model", "prior", "--task", "slake", "--data-dir", str(shared_data / "slake"),
               "--limit", "5", "--no-progress", "--runs-dir", str(tmp_path / "kept"))
    assert proc.returncode == 2 and (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_an_adapter_folder_without_its_config_is_refused_before_the_model_loads(tmp_path):
    empty = tmp_path / "adapter"
    empty.mkdir()
    proc = cli("run", "--model", "tiny-vlm", "--task", "phantom-vqa", "--adapter", str(empty), "--limit", "2",
               "--output", str(tmp_path / "run"), "--no-progress")
    assert proc.returncode == 2 and proc.stderr == (f"error: --adapter {empty}: no adapter_config.json (expected a "
                                                    "folder saved by PEFT, e.g. by harness finetune)\n")
    assert not (tmp_path / "run").exists()
    (empty / "config.json").write_text("{}")  # a whole model (harness finetune --method full) given as --adapter
    proc = cli("run", "--model", "tiny-vlm", "--task", "phantom-vqa", "--adapter", str(empty), "--limit", "2",
               "--output", str(tmp_path / "run"), "--no-progress")
    assert proc.returncode == 2 and proc.stderr.endswith(
        "(it holds a whole model: load it with --model hf --model-args model=<folder>, without --adapter)\n")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_while_predictions_are_appended_is_an_error_naming_the_file():
    """The CLI turns an OSError that names its file into one line; an append to a full disk named none (a
    traceback ending in 'No space left on device')."""
    import errno

    from harness.io import append_jsonl

    with pytest.raises(OSError) as info:
        append_jsonl(Path("/dev/full"), [{"id": "a", "prediction": "yes"}])
    assert info.value.errno == errno.ENOSPC and info.value.filename == "/dev/full"


def test_the_prior_says_its_training_data_warnings_when_it_learns_not_when_its_run_id_is_computed(tmp_path,
                                                                                                   shared_data):
    """The run id reads the train split (other training data is another run); its warnings (SLAKE's blank train
    answer) come once, when the prior learns from it, and not before an error about the evaluated split."""
    import shutil

    data = tmp_path / "slake"
    shutil.copytree(shared_data / "slake", data, ignore=shutil.ignore_patterns("imgs"))
    images = {r["img_name"] for r in json.loads((data / "test.json").read_text())[:5]}
    for name in images:
        (data / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(data / "imgs" / name)
    run = ["run", "--model", "prior", "--task", "slake", "--data-dir", str(data), "--limit", "5", "--judge",
           "exact", "--no-progress", "--output", str(tmp_path / "run")]
    first = cli(*run)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("split 'train': 1 sample with a blank reference skipped") == 1
    again = cli(*run)  # nothing to generate: the prior does not learn, and the train split is not mentioned
    assert again.returncode == 0 and "split 'train'" not in again.stderr, again.stderr


def test_data_dir_on_a_generated_task_says_to_drop_it(tmp_path):
    """It said 'matches no local format ...; expected files (this task has no local source)'."""
    proc = cli("run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exact", "--data-dir", str(tmp_path),
               "--no-progress", "--runs-dir", str(tmp_path / "runs"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].endswith("reads no folder (its source 'embedded' generates its data); drop --data-dir")


def test_a_mistyped_model_arg_is_refused_before_the_data_is_read(tmp_path, shared_data):
    """Reading (and for a hub source, downloading and hashing) the split came first, so a typo waited for it: here
    the copy's JSON is cut short, and reading it first would report that instead."""
    copy = tmp_path / "vqa-rad"
    (copy / "VQA_RAD Image Folder").mkdir(parents=True)
    text = (shared_data / "vqa-rad" / "VQA_RAD Dataset Public.json").read_text(encoding="utf-8")
    (copy / "VQA_RAD Dataset Public.json").write_text(text[: len(text) // 2], encoding="utf-8")
    for model, args, expected in (("hf", "modle=x", "unknown to the hf backend (did you mean 'model'?)"),
                                  ("gpt-4o", "concurency=2", "unknown --model-args 'concurency' (did you mean "
                                                             "'concurrency'?)")):
        proc = cli("run", "--model", model, "--model-args", args, "--task", "vqa-rad", "--data-dir", str(copy),
                   "--judge", "exact", "--no-progress")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr


def test_argument_mistakes_are_one_line_not_the_whole_usage():
    """`--rank abc` or a missing --model printed the command's twenty-line usage before the error."""
    for args, expected in [
        (("finetune", "--model", "tiny-vlm", "--task", "phantom-vqa", "--out", "x", "--rank", "abc"),
         "harness finetune: error: argument --rank: invalid int value: 'abc' (see harness finetune --help)"),
        (("run", "--task", "phantom-vqa"),
         "harness run: error: the following arguments are required: --model (see harness run --help)"),
    ]:
        proc = cli(*args)
        assert proc.returncode == 2 and proc.stderr == expected + "\n", proc.stderr


def test_an_unknown_option_names_the_commands_own_help():
    proc = cli("run", "--model", "prior", "--task", "phantom-vqa", "--bogus")
    assert proc.returncode == 2 and proc.stderr == ("harness run: error: unrecognized arguments: --bogus "
                                                    "(see harness run --help)\n"), proc.stderr


def test_the_seed_of_greedy_decoding_makes_no_other_run(tmp_path, capsys):
    """Greedy decoding draws nothing: `--seed 3` gave tiny-vlm the same answers under another run id (another row);
    an API model keeps its seed (OpenAI's API takes one even at temperature 0)."""
    from harness import plugin_manager
    from harness.ignored_settings import used_settings
    from harness.plugin_manager import tasks
    from harness.task import Task

    run = ["run", "--model", "tiny-vlm", "--model-args", "base=random", "--task", "phantom-vqa", "--limit", "2",
           "--no-progress", "--judge", "exact", "--runs-dir", str(tmp_path / "runs")]
    assert cli(*run).returncode == 0
    proc = cli(*run, "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert ("warning: --seed 3 ignored: decoding is greedy (temperature 0), which draws nothing, so this is the run "
            "without it") in proc.stderr
    proc = cli(*run, "--top-p", "0.5", "--seed", "3")
    assert "warning: --top-p 0.5 and --seed 3 ignored: decoding is greedy" in proc.stderr, proc.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 1
    proc = cli(*run, "--seed", "3", "--temperature", "0.7")  # sampling: the seed matters
    assert proc.returncode == 0 and "ignored" not in proc.stderr, proc.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 2
    proc = cli(*run, "--seed", "3", "--temperature", "0.7", "--top-p", "0.9")  # and so does top_p
    assert proc.returncode == 0 and len(list((tmp_path / "runs").iterdir())) == 3, proc.stderr
    proc = cli(*run, "--top-p", "0")
    assert proc.returncode == 2 and "generation setting top_p=0.0 (command line or task 'phantom-vqa'): expected " \
        "a number in (0, 1]" in proc.stderr
    _, _, settings = used_settings(Task(tasks().get("phantom-vqa")), plugin_manager.models().get("gpt-4o"), None,
                                   {"seed": 3})  # OpenAI's API takes a seed at temperature 0 too
    assert settings.seed == 3 and "ignored" not in capsys.readouterr().err


def test_no_judge_generates_predictions_only_for_scoring_later(tmp_path):
    """With the light core a report task could not even be generated (its default judge, lexical, needs an extra):
    --no-judge writes the predictions and nothing else; harness score judges them later."""
    out = tmp_path / "run"
    proc = cli("run", "--model", "prior", "--task", "phantom-report", "--limit", "3", "--no-judge", "--output",
               str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"predictions: {out / 'predictions.jsonl'} (3 samples, 0 failed); not judged")
    assert (out / "predictions.jsonl").is_file() and not (out / "results.json").exists()
    assert not (out / "scores.jsonl").exists()
    proc = cli("run", "--model", "prior", "--task", "phantom-report", "--no-judge", "--judge", "lexical",
               "--output", str(out), "--no-progress")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --no-judge with --judge lexical: choose one")
    proc = cli("score", str(out), "--no-progress")  # a later stage, on what was generated: the task's judges
    assert proc.returncode == 0, proc.stderr
    assert [j["id"] for j in json.loads((out / "results.json").read_text())["judges"]] == ["lexical"]


def test_every_command_writing_a_file_takes_o_for_its_output():
    """`harness compare ... -o x.json` and `harness publish -o` took it; `harness agreement -o` was an error."""
    from harness.cli import build_parser

    parser = build_parser()
    for argv in (["agreement", "--labels", "l.csv", "--scores", "run", "--judge", "gpt4", "-o", "x.json"],
                 ["score", "run", "-o", "x"], ["compare", "a", "b", "-o", "x.json"],
                 ["publish", "run", "-o", "x.json"]):
        assert str(parser.parse_args(argv).output) in ("x.json", "x"), argv
