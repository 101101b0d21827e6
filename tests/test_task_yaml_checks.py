"""Task YAML mistakes that used to pass validation and fail at run time: bad prompt templates, repeated keys; and
files that used to hang or give a traceback (alias bombs, foreign tags, bytes that are not UTF-8)."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.task import Task
from harness.task_config import load_task_config
from harness.types import Sample

TASKS_DIR = Path(str(resources.files("harness.tasks")))
PEFOMED = '  pefomed: "[vqa] Based on the image, respond to this question with a short answer: {question}"'


def _copy(tmp_path: Path, old: str, new: str, name: str = "vqa-rad.yaml") -> tuple[Path, int]:
    """Copy a shipped task YAML with one line replaced by `new` (one or more lines); return path and its line."""
    lines = (TASKS_DIR / name).read_text(encoding="utf-8").splitlines()
    index = lines.index(old)
    lines[index] = new
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, index + 1


def _error(path: Path) -> str:
    with pytest.raises(UserError) as err:
        load_task_config(path)
    message = str(err.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ prompt templates
@pytest.mark.parametrize(("template", "said"), [
    ("{question} {nosuch}", "unknown placeholder {nosuch}; allowed placeholders: {question}"),
    ("{0} {question}", "unknown placeholder {0}; allowed placeholders: {question}"),
    ("{} {question}", "an empty placeholder {}; allowed placeholders: {question}"),
    ("{question.upper} {question}", "unknown placeholder {question.upper}; allowed placeholders: {question}"),
    ("{question:{width}}", "unknown placeholder {width}; allowed placeholders: {question}"),
])
def test_unknown_placeholder_names_file_line_prompt_and_allowed_ones(tmp_path, template, said):
    path, line = _copy(tmp_path, PEFOMED, f'  pefomed: "{template}"')
    assert _error(path).startswith(f"{path}:{line}: field 'prompts.pefomed': {said}")


@pytest.mark.parametrize(("template", "said"), [
    ("{question} {", "stray '{' at character 12 (near '{question} {'); close the placeholder (e.g. {question}) "
                     "or write {{ for a literal brace"),
    ("Use {braces like this {question}", "stray '{' at character 5"),
    ("{question} } done", "stray '}' at character 12 (near '{question} } done'); write }} for a literal brace"),
])
def test_stray_brace_is_named_with_where_it_is_and_how_to_double_it(tmp_path, template, said):
    path, line = _copy(tmp_path, PEFOMED, f'  pefomed: "{template}"')
    assert _error(path).startswith(f"{path}:{line}: field 'prompts.pefomed': {said}")


def test_a_spec_that_cannot_format_a_question_is_refused(tmp_path):
    path, line = _copy(tmp_path, PEFOMED, '  pefomed: "{question:d}"')
    message = _error(path)
    assert message.startswith(f"{path}:{line}: field 'prompts.pefomed': cannot be filled (ValueError: ")
    assert message.endswith("allowed placeholders: {question}")


def test_default_prompt_and_report_prompts_are_checked_too(tmp_path):
    lines = (TASKS_DIR / "iu-xray.yaml").read_text(encoding="utf-8").splitlines()
    old = next(line for line in lines if line.startswith("  default: "))
    path, line = _copy(tmp_path, old, '  default: "Write the findings for {modality}."', "iu-xray.yaml")
    assert _error(path) == (f"{path}:{line}: field 'prompts.default': unknown placeholder {{modality}}; "
                            "allowed placeholders: {question} (write {{ and }} for a literal brace)")


def test_doubled_braces_and_question_with_a_spec_are_valid_and_fill_as_written(tmp_path):
    path, _ = _copy(tmp_path, PEFOMED, '  pefomed: "{{json}} {question!r:>5} {{"')
    config = load_task_config(path)
    task = Task(config, source="hf")
    sample = Sample(id="1", images=[], answer="yes", question="ok")
    request = task.build_request(sample, task.prompt_template("pefomed")[1], task.generation_settings(), [])
    assert request.prompt == "{json}  'ok' {"


def test_a_vqa_prompt_with_only_a_literal_question_brace_lacks_the_placeholder(tmp_path):
    path, line = _copy(tmp_path, PEFOMED, '  pefomed: "{{question}}"')
    assert _error(path) == (f"{path}:{line}: field 'prompts.pefomed': "
                            "a vqa prompt must contain the placeholder {question}")


# --------------------------------------------------------------------------------------------- duplicate keys
def test_a_repeated_top_level_key_is_named_at_its_second_line(tmp_path):
    path, line = _copy(tmp_path, "kind: vqa", "kind: vqa\nkind: report")
    assert _error(path) == (f"{path}:{line + 1}: duplicate key 'kind' (first given at line {line}); "
                            "each key may appear once in a mapping: keep one")


def test_a_repeated_nested_key_is_named_with_its_path(tmp_path):
    path, line = _copy(tmp_path, "  max_new_tokens: 16", "  max_new_tokens: 16\n  max_new_tokens: 64")
    assert _error(path).startswith(f"{path}:{line + 1}: duplicate key 'generation.max_new_tokens' "
                                   f"(first given at line {line})")
    path, line = _copy(tmp_path, "    sizes: {test: 451, train: 1797}", "    sizes: {test: 451, test: 450}")
    assert _error(path).startswith(f"{path}:{line}: duplicate key 'sources.0.sizes.test'")


def test_same_key_in_different_mappings_and_anchors_are_fine(tmp_path):
    path, _ = _copy(tmp_path, "      id: qid", "      id: &qid qid")
    config = load_task_config(path)
    assert config.source("official").fields["id"] == config.source("mevf").fields["id"] == "qid"


def _alias_bomb(levels: int = 9) -> str:
    """`levels` lines, each a list of nine aliases of the line before ("billion laughs": 9**levels values)."""
    lines = ['  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines)


def test_an_alias_bomb_is_refused_quickly_at_the_alias_that_goes_over(tmp_path):
    """It used to hang every command (1.9 GB after 2 minutes) once something walked the expanded values."""
    path, line = _copy(tmp_path, "  license: CC0 1.0", _alias_bomb() + "\n  license: *l9")
    started = time.monotonic()
    message = _error(path)
    assert time.monotonic() - started < 5
    # l4 expands to 9**5 = 59,049 values, the first to pass 10,000
    assert message.startswith(f"{path}:{line + 4}: the file holds more than 10000 values once aliases are "
                              "expanded (at alias *l3); a task file needs a few hundred")


def test_a_value_that_contains_itself_is_refused(tmp_path):
    path, line = _copy(tmp_path, "  citation: >-", "  loop: &loop [a, *loop]\n  citation: >-")
    assert _error(path) == (f"{path}:{line}: alias *loop is used inside its own anchor &loop (a value that contains "
                            "itself); write the value out")


def test_aliases_within_the_limit_still_work(tmp_path):
    path, _ = _copy(tmp_path, "      id: qid", "      id: &qid qid")
    path.write_text(path.read_text().replace("      question: question", "      question: *qid"))
    config = load_task_config(path)
    assert config.source("official").fields["question"] == config.source("mevf").fields["question"] == "qid"


@pytest.mark.parametrize(("value", "said"), [
    ('!!python/object/apply:os.system ["echo hacked"]',
     "tag !!python/object/apply:os.system is not allowed in a task file (plain YAML values only: "),
    ("!Include other.yaml", "tag !Include is not allowed in a task file"),
    ("!!int one", "value 'one' is not a valid !!int (invalid literal for int() with base 10: 'one')"),
    ("2024-13-01", "value '2024-13-01' is not a valid !!timestamp (month must be in 1..12)"),
])
def test_a_value_the_safe_loader_cannot_build_is_named_at_its_line(tmp_path, value, said):
    path, line = _copy(tmp_path, "train_split: train", f"train_split: train\ncreated: {value}")
    assert _error(path).startswith(f"{path}:{line + 1}: {said}")


def test_a_task_file_that_is_not_utf8_is_named_with_line_and_byte(tmp_path):
    path, line = _copy(tmp_path, "kind: vqa", "kind: vqa  # caf\u00e9")
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))
    offset = path.read_bytes().index(0xE9)
    assert _error(path) == f"{path}:{line}: not UTF-8 text (byte 0xe9 at offset {offset}); save it as UTF-8"


# ------------------------------------------------------------------------------------------ misspelt keys
ALLOWED_TOP = ("aliases, breakdowns, description, generation, id, judges, kind, metadata, prompts, sources, "
               "test_split, train_split, version")


def test_a_misspelt_required_key_is_named_at_its_own_line_with_the_key_it_should_be(tmp_path):
    # `prompt:` is both an unknown key and a missing `prompts`: named once, at its own line, not at line 1
    path, line = _copy(tmp_path, "prompts:", "prompt:")
    assert _error(path) == (f"{path}:{line}: field 'prompt': unknown field (did you mean 'prompts'? it is required "
                            f"but missing); allowed fields: {ALLOWED_TOP}")


def test_an_unknown_top_level_key_is_named_at_its_own_line(tmp_path):
    path, line = _copy(tmp_path, "judges: [exact]", "judgse: [exact]")
    assert _error(path) == (f"{path}:{line}: field 'judgse': unknown field (did you mean 'judges'?); "
                            f"allowed fields: {ALLOWED_TOP}")
    path, line = _copy(tmp_path, "judges: [exact]", "zzz: [exact]")  # nothing close: no suggestion
    assert _error(path) == f"{path}:{line}: field 'zzz': unknown field; allowed fields: {ALLOWED_TOP}"


def test_an_unknown_key_in_a_source_or_generation_is_named_at_its_own_line(tmp_path):
    path, line = _copy(tmp_path, "    sizes: {test: 451, train: 3064}", "    size: {test: 451, train: 3064}")
    assert _error(path).startswith(f"{path}:{line}: field 'sources.1.size': unknown field (did you mean 'sizes'?); "
                                   "allowed fields: closed_rule, cluster_by, config, description, fields, format,")
    path, line = _copy(tmp_path, "    format: mevf-json", "    formt: mevf-json")
    assert _error(path).startswith(f"{path}:{line}: field 'sources.1.formt': unknown field (did you mean 'format'? "
                                   "it is required but missing)")
    path, line = _copy(tmp_path, "  max_new_tokens: 16", "  max_new_token: 16")
    assert _error(path) == (f"{path}:{line}: field 'generation.max_new_token': unknown field (did you mean "
                            "'max_new_tokens'?); allowed fields: do_sample, max_new_tokens, seed, stop, temperature, "
                            "top_p")


def test_the_temperature_alone_decides_sampling(tmp_path):
    # a copied YAML whose temperature was raised and do_sample left false decoded greedily, recorded as sampled
    path, _ = _copy(tmp_path, "  temperature: 0.0", "  temperature: 1.0")
    line = path.read_text().splitlines().index("  do_sample: false") + 1
    assert _error(path) == (f"{path}:{line}: field 'generation.do_sample': false with temperature 1.0; the "
                            "temperature alone decides (0: greedy, above 0: sampling): drop do_sample or change "
                            "the temperature")
    path, _ = _copy(tmp_path, "  do_sample: false", "  do_sample: true")  # sampling at temperature 0
    assert "field 'generation.do_sample': true with temperature 0.0" in _error(path)
    path, _ = _copy(tmp_path, "  do_sample: false", "")  # the temperature alone: sampling
    path.write_text(path.read_text().replace("  temperature: 0.0", "  temperature: 0.7"))
    task = Task(load_task_config(path), source="official")
    assert task.generation_settings().do_sample is True
    assert task.generation_settings({"temperature": 0}).do_sample is False  # --temperature 0: greedy


def test_a_fields_key_a_format_does_not_read_is_an_error_at_its_line(tmp_path):
    # r2gen-json reads id, answer, image, split: a misspelt `answer` evaluated the default `report` column
    path, line = _copy(tmp_path, "      answer: report", "      anwser: findings", "iu-xray.yaml")
    assert _error(path) == (f"{path}:{line}: field 'sources.0.fields': unknown key anwser (did you mean 'answer'?) "
                            "for format 'r2gen-json' (it has no breakdown fields); allowed keys: id, answer, image, "
                            "split")
    path, line = _copy(tmp_path, "      cuis: CUIs", "      cuis: CUIs\n      modality: Modality", "rocov2.yaml")
    assert "field 'sources.0.fields': unknown key modality for format 'imageclef-csv'" in _error(path)
    load_task_config(TASKS_DIR / "vqa-rad.yaml")  # formats with breakdowns take any other name


def test_a_cluster_by_field_the_samples_lack_is_an_error_not_intervals_left_out(tmp_path):
    path, _ = _copy(tmp_path, "    options: {seed: 0, n_train: 300, n_test: 100}",
                    "    options: {seed: 0, n_train: 300, n_test: 100}\n    cluster_by: cas_id", "phantom-vqa.yaml")
    task = Task(load_task_config(path))
    with pytest.raises(UserError) as err:
        task.samples("test")
    assert str(err.value).startswith(f"{path}: source 'embedded' cluster_by 'cas_id': 361 of 361 samples of split "
                                     "'test' have no such field (the first: ")
    assert "(did you mean 'case_id'?); fields the samples have: answer_type, case_id" in str(err.value)
    path.write_text(path.read_text().replace("cas_id", "case_id"))
    assert len(Task(load_task_config(path)).samples("test")) == 361


def test_a_misspelt_required_key_where_other_keys_are_allowed_is_named_at_its_line(tmp_path):
    # metadata and prompts take keys of the user's choosing, so only the missing key gives the typo away
    text = (TASKS_DIR / "vqa-rad.yaml").read_text(encoding="utf-8").splitlines()
    old = next(line for line in text if line.startswith("  license:"))
    path, line = _copy(tmp_path, old, old.replace("license", "licence"))
    assert _error(path) == (f"{path}:{line}: field 'metadata.licence': unknown field (did you mean 'license'? "
                            "it is required but missing)")
    old = next(line for line in text if line.startswith("  default:"))
    path, line = _copy(tmp_path, old, old.replace("default", "defualt"))
    assert _error(path).startswith(f"{path}:{line}: field 'prompts.defualt': unknown field (did you mean 'default'?")


def test_a_required_key_that_is_simply_absent_is_still_named_at_its_parent(tmp_path):
    path, _ = _copy(tmp_path, "id: vqa-rad", "")  # the file's mapping starts at line 3 (after a comment)
    assert _error(path) == f"{path}:3: field '(top level)': 'id' is required but missing"


def test_every_missing_required_key_of_a_mapping_is_named_at_once(tmp_path):
    """A first task YAML with an empty metadata block took three more attempts, one missing key each."""
    path = tmp_path / "mine.yaml"
    path.write_text("id: mine\nversion: '1'\nkind: vqa\nsources:\n  - {name: local, format: mevf-json, "
                    "closed_rule: answer_type}\nprompts: {default: '{question}'}\nmetadata: {}\n")
    assert _error(path) == (f"{path}:7: field 'metadata': 'credentialed', 'license', 'citation' are required but "
                            "missing")


def test_an_empty_stop_string_is_refused_at_its_line(tmp_path):
    """`stop: [""]` stopped hf models after one token and was ignored by API models."""
    path, line = _copy(tmp_path, "  max_new_tokens: 16", "  max_new_tokens: 16\n  stop: ['']")
    error = _error(path)
    assert error.startswith(f"{path}:{line + 1}: ") and "stop" in error and "should be non-empty" in error, error


def test_a_split_the_yaml_names_that_no_file_has_says_where_it_came_from(tmp_path):
    """`test_split: validation` on a format without it said "has no split 'validation'" with no word of the YAML
    (no --split was typed); `splits: {test: tst}` said "has no split 'test'; its splits: train, test"."""
    from format_writers import cases, write_mevf

    data = tmp_path / "data"
    write_mevf(data, cases(4, seed=7))
    path, _ = _copy(tmp_path, "test_split: test", "test_split: validation")
    with pytest.raises(UserError) as err:
        Task(load_task_config(path), data_dir=data, source="mevf").samples()
    assert str(err.value) == ("source 'mevf' (mevf-json) has no split 'validation'; its splits: train, test (split "
                              f"'validation': the task's test_split, in {path})")
    path, _ = _copy(tmp_path, "    sizes: {test: 451, train: 3064}",
                    "    sizes: {test: 451, train: 3064}\n    splits: {test: tst}")
    with pytest.raises(UserError) as err:
        Task(load_task_config(path), data_dir=data, source="mevf").samples("test")
    assert str(err.value) == ("source 'mevf' (mevf-json) has no split 'tst'; its splits: train, test (split 'test': "
                              f"read as 'tst' by source 'mevf''s splits mapping, in {path})")
