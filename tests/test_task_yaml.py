"""Shipped task YAMLs validate and say what they promise; broken task files give `file:line` errors."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.plugin_manager import tasks
from harness.task import Task
from harness.task_config import load_task_config
from harness.types import Sample

TASKS_DIR = Path(str(resources.files("harness.tasks")))
OURS = ("vqa-rad", "slake", "pathvqa", "iu-xray", "rocov2")
PEFOMED_VQA = "[vqa] Based on the image, respond to this question with a short answer: {question}"


@pytest.mark.parametrize("path", sorted(TASKS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_validates(path):
    config = load_task_config(path)
    assert config.id == path.stem
    assert "default" in config.prompts


@pytest.mark.parametrize("task_id", OURS)
def test_dataset_tasks_are_registered_with_their_settings(task_id):
    config = tasks().get(task_id)
    assert not config.credentialed
    assert {"license", "citation", "homepage"} <= set(config.metadata)
    assert config.generation["temperature"] == 0 and config.generation["do_sample"] is False
    expected = {"vqa": (16, ["exact"]), "report": (128, ["lexical"]), "caption": (64, ["lexical"])}[config.kind]
    assert (config.generation["max_new_tokens"], config.judges) == expected
    assert config.prompts["pefomed"].startswith({"vqa": "[vqa]", "report": "[report]", "caption": "[caption]"}[
        config.kind])
    for source in config.sources:
        if source.format == "hf":
            assert source.path and source.revision  # hub sources always name what they read
        if config.kind == "vqa":
            assert source.closed_rule in ("answer_type", "yes_no")


@pytest.mark.parametrize("task_id", ["vqa-rad", "slake", "pathvqa"])
def test_vqa_prompt_variants_fill_the_question(task_id):
    t = Task(tasks().get(task_id), source=tasks().get(task_id).sources[0].name)
    sample = Sample(id="1", images=[], answer="yes", question="Is there a lesion?")
    settings = t.generation_settings()
    prompts = {name: t.build_request(sample, t.prompt_template(name)[1], settings, []).prompt
               for name in ("default", "pefomed", "llava-med")}
    assert prompts["pefomed"] == PEFOMED_VQA.format(question="Is there a lesion?")
    assert prompts["llava-med"] == "Is there a lesion?\nAnswer with a single word or phrase."
    assert "Is there a lesion?" in prompts["default"]
    assert settings.max_new_tokens == 16 and settings.do_sample is False


def _broken_copy(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """Copy vqa-rad.yaml with one line changed; return the path and the 1-based number of that line."""
    text = (TASKS_DIR / "vqa-rad.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    index = lines.index(old)
    lines[index] = new
    path = tmp_path / "vqa-rad.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, index + 1


def test_bad_indentation_names_file_and_line(tmp_path):
    path, line = _broken_copy(tmp_path, "  - name: mevf", "   - name: mevf")
    with pytest.raises(UserError, match="malformed YAML") as err:
        load_task_config(path)
    assert str(err.value).startswith(f"{path}:{line}:")


def test_wrong_kind_names_field_line_and_allowed_values(tmp_path):
    path, line = _broken_copy(tmp_path, "kind: vqa", "kind: foo")
    with pytest.raises(UserError) as err:
        load_task_config(path)
    assert str(err.value) == f"{path}:{line}: field 'kind': got 'foo', expected one of vqa, report, caption"


def test_wrong_closed_rule_names_the_source_field(tmp_path):
    path, line = _broken_copy(tmp_path, "    closed_rule: yes_no", "    closed_rule: maybe")
    with pytest.raises(UserError) as err:
        load_task_config(path)
    assert str(err.value).startswith(f"{path}:{line}: field 'sources.2.closed_rule': got 'maybe'")
    assert "answer_type, yes_no" in str(err.value)


def test_vqa_prompt_without_question_is_refused(tmp_path):
    old = '  llava-med: "{question}\\nAnswer with a single word or phrase."'
    path, line = _broken_copy(tmp_path, old, '  llava-med: "Answer with a single word or phrase."')
    with pytest.raises(UserError) as err:
        load_task_config(path)
    assert str(err.value).startswith(f"{path}:{line}: field 'prompts.llava-med'")
    assert "{question}" in str(err.value)


@pytest.mark.parametrize(("bad", "said"), [("{test: many}", "got 'many', expected type integer"),
                                           ("{test: 0}", "0 is less than the minimum of 1"),
                                           ("[451]", "expected type object"),
                                           ("{tset: 451}", "'tset' is not a split of this source (expected one of "
                                                           "test, train, validation)")])
def test_bad_expected_sizes_name_file_line_and_field(tmp_path, bad, said):
    path, line = _broken_copy(tmp_path, "    sizes: {test: 451, train: 1797}", f"    sizes: {bad}")
    with pytest.raises(UserError) as err:
        load_task_config(path)
    assert str(err.value).startswith(f"{path}:{line}: field 'sources.0.sizes")
    assert said in str(err.value)


def test_expected_sizes_are_read_into_the_source(tmp_path):
    path, _ = _broken_copy(tmp_path, "    sizes: {test: 451, train: 1797}", "    sizes: {test: 450}")
    config = load_task_config(path)
    assert config.source("official").sizes == {"test": 450}
    assert config.source("official").expected_size("test") == 450
    assert config.source("official").expected_size("train") is None


def test_misspelt_source_option_names_line_and_the_options_the_format_reads(tmp_path):
    # a typo (q_lang -> qlang) would otherwise keep Chinese questions out or in without a word
    text = (TASKS_DIR / "slake.yaml").read_text(encoding="utf-8").replace("      q_lang: en", "      qlang: all")
    path = tmp_path / "slake.yaml"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("      qlang: all") + 1
    with pytest.raises(UserError) as err:
        load_task_config(path)
    assert str(err.value) == (
        f"{path}:{line}: field 'sources.0.options': unknown option qlang (did you mean 'q_lang'?) for format "
        "'slake-json'; allowed options: files, q_lang, image_dir"
    )


def test_option_on_a_format_without_options_and_an_unknown_format_are_refused(tmp_path):
    path, line = _broken_copy(tmp_path, "    revision: main", "    options: {split: test}")
    with pytest.raises(UserError) as err:
        load_task_config(path)
    assert str(err.value) == (
        f"{path}:{line}: field 'sources.2.options': unknown option split for format 'hf'; this format takes no options"
    )
    path, line = _broken_copy(tmp_path, "    format: mevf-json", "    format: mevf-jsonl")
    with pytest.raises(UserError) as err:
        load_task_config(path)
    assert str(err.value).startswith(f"{path}:{line}: field 'sources.1.format': got 'mevf-jsonl' (did you mean "
                                     "'mevf-json'?), expected one of hf,")


def test_a_misspelt_default_judge_names_the_task_file_and_line(tmp_path):
    from harness.scoring import check_default_judges

    path, line = _broken_copy(tmp_path, "judges: [exact]", "judges: [exactt]")
    with pytest.raises(UserError) as err:
        check_default_judges(load_task_config(path))
    assert str(err.value).startswith(f"{path}:{line}: field 'judges': unknown judge 'exactt'")
    assert "Did you mean 'exact'?" in str(err.value)
    check_default_judges(load_task_config(TASKS_DIR / "vqa-rad.yaml"))  # the shipped one is fine
    path, line = _broken_copy(tmp_path, "judges: [exact]", "judges: [likert]")  # a judge of another task kind
    with pytest.raises(UserError) as err:
        check_default_judges(load_task_config(path))
    assert str(err.value) == f"{path}:{line}: field 'judges': judge 'likert' scores report/caption tasks, not this " \
                             "vqa task"


def test_a_report_or_caption_prompt_with_a_question_placeholder_is_refused(tmp_path):
    text = (TASKS_DIR / "iu-xray.yaml").read_text(encoding="utf-8")
    old = next(line for line in text.splitlines() if line.startswith("  default:"))
    path = tmp_path / "iu-xray.yaml"
    path.write_text(text.replace(old, '  default: "Describe {question}"'), encoding="utf-8")
    with pytest.raises(UserError, match=r"field 'prompts.default': a report task has no question: \{question\} "
                                        r"would be filled with nothing"):
        load_task_config(path)
