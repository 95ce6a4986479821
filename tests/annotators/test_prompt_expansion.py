from __future__ import annotations

import pytest
import torch

from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.prompt_expansion import (
    MAX_NEW_TOKENS,
    load_prompt_expander,
    system_message,
)
from preprocessors.annotators.tiny import build_tiny_prompt_llm


@pytest.fixture(scope="module")
def expander(tiny_dir):
    return load_prompt_expander(build_tiny_prompt_llm(tiny_dir / "llm"), device="cpu", max_new_tokens=24)


def test_chat_template_carries_the_system_message(expander):
    text = expander.chat_text("a cat walks", "depth")
    assert text.startswith("<|im_start|>system\n" + system_message("depth") + "<|im_end|>\n")
    assert "<|im_start|>user\na cat walks<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert "depth" in system_message("depth") and system_message("nonsense") == system_message(None)
    assert "120 words" in system_message("pose")


def test_generation_is_greedy_bounded_and_non_empty(expander, monkeypatch):
    calls, outputs = [], []
    real_generate = expander.model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        outputs.append(real_generate(**kwargs))
        return outputs[-1]

    monkeypatch.setattr(expander.model, "generate", spy)
    prompt = "a dog runs in the city"
    first = expander.expand_prompt(prompt, "pose")
    second = expander.expand_prompt(prompt, "pose")
    # The random model's words are gibberish, but they are its own (not the fallback) and reproducible.
    assert isinstance(first, str) and first.strip() and first != prompt and first == second
    assert "\n" not in first
    kwargs = calls[0]
    assert kwargs["do_sample"] is False and kwargs["max_new_tokens"] == 24
    assert outputs[0].shape[1] - kwargs["input_ids"].shape[1] <= 24
    # The prompt handed to the model is the templated conversation, token for token.
    ids = expander.tokenizer(expander.chat_text(prompt, "pose"), add_special_tokens=False)
    assert kwargs["input_ids"][0].tolist() == ids["input_ids"]


def test_falls_back_to_the_prompt_when_nothing_comes_back(expander, monkeypatch):
    eos = expander.tokenizer.eos_token_id

    def only_eos(input_ids, **kwargs):
        return torch.cat([input_ids, torch.tensor([[eos, eos]])], dim=1)

    monkeypatch.setattr(expander.model, "generate", only_eos)
    assert expander.expand_prompt("sunset light", "depth") == "sunset light"
    assert expander.expand_prompt("   ") == "   "


def test_output_is_one_clean_paragraph(expander, monkeypatch):
    words = expander.tokenizer('" a cat \n\n walks slowly "', add_special_tokens=False)["input_ids"]

    def canned(input_ids, **kwargs):
        return torch.cat([input_ids, torch.tensor([words])], dim=1)

    monkeypatch.setattr(expander.model, "generate", canned)
    assert expander.expand_prompt("cat", None) == "a cat walks slowly"


def test_default_bound():
    assert 150 <= MAX_NEW_TOKENS <= 256


def test_missing_folder(tmp_path):
    with pytest.raises(AnnotatorNotFoundError, match="vace download --annotators"):
        load_prompt_expander(tmp_path / "llm")
