"""Prompt embeddings kept between jobs, so a repeated prompt skips the text encoder.

The negative prompt rarely changes (fal's default is a fixed text), and clients often resubmit a prompt with
another seed or video. Each text's embedding is cached on its own, in a small LRU stored on the pipeline
itself (so the key's model is the loaded one): under all_on_gpu with the text encoder kept in RAM, a full hit
also saves moving umt5-xxl's 10.6 GiB to the GPU and back (pipelines/memory.py's encode_prompts). An entry
is one (1, 512, 4096) embedding, 4 MiB in bf16, on the device the pipeline runs on.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from pipelines.memory import MAX_PROMPT_TOKENS, encode_prompts

CACHE_ATTR = "_vace_prompt_cache"
MAX_ENTRIES = 16  # 64 MiB of embeddings at the 14B model's size


class PromptCache:
    """Least-recently-used embeddings keyed by (text, max_sequence_length)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()

    def get(self, key: tuple[str, int]) -> torch.Tensor | None:
        embeds = self._entries.get(key)
        if embeds is not None:
            self._entries.move_to_end(key)
        return embeds

    def put(self, key: tuple[str, int], embeds: torch.Tensor) -> None:
        self._entries[key] = embeds
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def cache_of(pipe: torch.nn.Module) -> PromptCache:
    cache = getattr(pipe, CACHE_ATTR, None)
    if cache is None:
        cache = PromptCache()
        setattr(pipe, CACHE_ATTR, cache)
    return cache


def cached_prompt_embeds(
    pipe: torch.nn.Module,
    prompt: str,
    negative_prompt: str,
    *,
    do_classifier_free_guidance: bool = True,
    max_sequence_length: int = MAX_PROMPT_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """encode_prompts' result, encoding only the texts not cached (both misses in one encoder call)."""
    cache = cache_of(pipe)
    key = (prompt, max_sequence_length)
    negative_key = (negative_prompt, max_sequence_length)
    positive = cache.get(key)
    negative = cache.get(negative_key) if do_classifier_free_guidance else None
    need_negative = do_classifier_free_guidance and negative is None
    if positive is None and need_negative:
        positive, negative = encode_prompts(pipe, prompt, negative_prompt, do_classifier_free_guidance=True,
                                            max_sequence_length=max_sequence_length)
    elif positive is None:
        positive = encode_prompts(pipe, prompt, "", do_classifier_free_guidance=False,
                                  max_sequence_length=max_sequence_length)[0]
    elif need_negative:
        # A text's embedding does not depend on which side of CFG it is on: encode it as a prompt.
        negative = encode_prompts(pipe, negative_prompt, "", do_classifier_free_guidance=False,
                                  max_sequence_length=max_sequence_length)[0]
    cache.put(key, positive)
    if negative is not None:
        cache.put(negative_key, negative)
    return positive, negative
