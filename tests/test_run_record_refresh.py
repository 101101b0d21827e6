"""A resumed run's record says what its task YAML says now: fields that do not enter the run id (breakdowns,
cluster_by, sizes, credentialed) are refreshed in run.json and results.json, as scoring uses the YAML's."""

from __future__ import annotations

import json
import types
from pathlib import Path

import yaml

HERE = Path(__file__).resolve()


def _plugin(path: Path) -> types.ModuleType:
    from harness.hookspecs import hookimpl

    plugin = types.ModuleType("tests_run_record_refresh")

    @hookimpl
    def register_tasks(register) -> None:
        register(path)

    plugin.register_tasks = register_tasks  # type: ignore[attr-defined]
    return plugin


def test_an_edited_task_yaml_is_what_the_resumed_runs_record_says(tmp_path, capsys):
    from harness import plugin_manager
    from harness.cli import main

    config = yaml.safe_load((HERE.parents[1] / "tasks" / "phantom-vqa.yaml").read_text())
    config.update(id="phantom-vqa-copy", aliases=[], breakdowns=["answer_type"])
    task_file = tmp_path / "phantom-vqa-copy.yaml"
    task_file.write_text(yaml.safe_dump(config))
    pm = plugin_manager.get_plugin_manager()
    pm.register(_plugin(task_file), name="tests.run_record_refresh")
    registries = (plugin_manager.models, plugin_manager.tasks, plugin_manager.judges)
    args = ["run", "--model", "prior", "--task", "phantom-vqa-copy", "--limit", "20", "--judge", "exact",
            "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    try:
        for registry in registries:  # another test of this process may have filled them
            registry.cache_clear()
        assert main(args) == 0
        config["breakdowns"] = ["answer_type", "organ"]
        config["sources"][0]["cluster_by"] = "case_id"
        task_file.write_text(yaml.safe_dump(config))
        for registry in registries:
            registry.cache_clear()
        assert main(args) == 0
        (run_dir,) = list((tmp_path / "runs").iterdir())  # the same run id: resumed
        config["breakdowns"] = ["answer_type", "question_type"]  # re-judged after another edit: the same rule
        task_file.write_text(yaml.safe_dump(config))
        for registry in registries:
            registry.cache_clear()
        assert main(["score", str(run_dir), "--judge", "exact:llava-med", "--no-progress"]) == 0
    finally:
        pm.unregister(name="tests.run_record_refresh")
        for registry in registries:
            registry.cache_clear()
    capsys.readouterr()
    manifest = json.loads((run_dir / "run.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    for task in (manifest["task"], results["task"]):
        assert task["breakdowns"] == ["answer_type", "question_type"] and task["cluster_by"] == "case_id"
    pefomed, llava_med = sorted(results["judges"], key=lambda j: j["convention"])[::-1]
    assert set(pefomed["breakdowns"]) == {"answer_type", "organ"}  # scored by the resumed run
    assert set(llava_med["breakdowns"]) == {"answer_type", "question_type"}  # by harness score, after the edit
    assert pefomed["metrics"]["accuracy"]["ci_method"].startswith("cluster")
