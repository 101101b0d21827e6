"""plugins/row_sampling.py: each row drawn from its own seeded stream, with the probabilities asked for."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins import row_sampling


def test_draws_follow_the_probabilities_and_never_pick_an_impossible_token():
    logits = torch.tensor([[math.log(0.2), -math.inf, math.log(0.8)]]).repeat(4000, 1)
    generators = row_sampling.row_generators(0, [str(i) for i in range(4000)])
    tokens = row_sampling.draw(logits, 1.0, 1.0, generators)
    counts = torch.bincount(tokens, minlength=3).tolist()
    assert counts[1] == 0 and abs(counts[0] / 4000 - 0.2) < 0.03
    top = row_sampling.draw(logits[:200], 1.0, 0.5, row_sampling.row_generators(0, [str(i) for i in range(200)]))
    assert set(top.tolist()) == {2}  # top-p 0.5: only the 0.8 token is kept


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_sharpens_or_flattens(temperature):
    logits = torch.tensor([[0.0, 1.0]]).repeat(4000, 1)
    tokens = row_sampling.draw(logits, temperature, 1.0, row_sampling.row_generators(1, [str(i) for i in range(4000)]))
    expected = 1 / (1 + math.exp(-1 / temperature))
    assert abs(tokens.float().mean().item() - expected) < 0.03


def test_a_rows_draws_depend_on_its_seed_and_id_only():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    ids = ["a", "b", "c"]
    together = row_sampling.draw(logits, 1.0, 1.0, row_sampling.row_generators(7, ids))
    alone = [row_sampling.draw(logits[i:i + 1], 1.0, 1.0, row_sampling.row_generators(7, [ids[i]])).item()
             for i in range(3)]
    assert together.tolist() == alone
    assert row_sampling.row_seed(7, "a") != row_sampling.row_seed(8, "a") != row_sampling.row_seed(7, "b")
