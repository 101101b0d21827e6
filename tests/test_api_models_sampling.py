"""API model baselines that sample: each sample is its own draw, also when two ask the same thing (against a local
fake OpenAI server, tests/fake_llm_servers.py)."""

from __future__ import annotations

from fake_llm_servers import FakeLLMServer

from harness.model_api import ModelContext
from harness.types import GenerationRequest, GenerationSettings


def test_identical_requests_are_separate_draws_only_when_sampling(monkeypatch, tmp_path):
    """Two samples with the same image and question shared one call's reply at temperature > 0 (the second
    a copy of the first), also across batches through the cache; at temperature 0 one call serves both."""
    import itertools

    from PIL import Image

    from harness.plugins.api_vlm import OpenAICompatibleModel

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    image = Image.new("RGB", (8, 8), (10, 200, 10))
    for sampling in (True, False):
        calls = itertools.count(1)
        settings = GenerationSettings(max_new_tokens=8, temperature=0.7 if sampling else 0.0, do_sample=sampling,
                                      seed=5 if sampling else 6, top_p=0.5)
        with FakeLLMServer(reply=lambda body, calls=calls: f"reply {next(calls)}") as server:
            model = OpenAICompatibleModel({"base_url": server.openai_base_url, "model": "tiny"}, ModelContext())

            def ask(sample_id: str, model=model, settings=settings) -> GenerationRequest:
                return GenerationRequest(id=sample_id, images=[image], prompt="Is there a mass?", messages=[],
                                         generation=settings, task_kind="vqa")

            first = model.generate([ask("q1"), ask("q2")])
            later = model.generate([ask("q3")])  # another batch: not the cached reply of q1
            again = model.generate([ask("q1")])  # the same sample again: its own draw, from the cache
            model.close()
        texts = [o.text for o in [*first, *later, *again]]
        if sampling:
            assert sorted(texts[:3]) == ["reply 1", "reply 2", "reply 3"]  # calls within a batch run concurrently
            assert texts[3] == texts[0] and len(server.requests) == 3
            assert sorted(body["seed"] for body in server.requests) == [5, 6, 7]  # each draw its own seed
            assert {body.get("top_p") for body in server.requests} == {0.5}  # recorded, and now sent too
        else:
            assert len(set(texts)) == 1 and len(server.requests) == 1
            assert "top_p" not in server.requests[0]  # greedy: no sampling setting is sent
