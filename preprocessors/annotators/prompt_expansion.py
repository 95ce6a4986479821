"""Prompt expansion with a local instruct LLM (e.g. Qwen/Qwen2.5-3B-Instruct, as VACE ships).

Greedy decoding with a bounded number of new tokens, so the same prompt always gives the same expansion.
The model never sees the video, so the instruction insists on keeping the user's intent and adding no new
subjects (VACE warns that blind expansion can contradict the source video).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from preprocessors.annotators._common import default_dtype, require_folder, resolve_device

SYSTEM_PROMPT = (
    "You rewrite prompts for a video editing model. The edit: {task}. Rewrite the user's prompt as one "
    "paragraph of plain English under 120 words. Keep every subject, object, style and action the user "
    "asked for, and do not add people, animals or objects the user did not mention. Describe the "
    "subject's appearance, how it moves, the camera framing and movement, and the lighting and mood. "
    "No lists, headings, quotes or explanations: reply with the paragraph only."
)
TASK_DESCRIPTIONS = {
    "depth": "a new video is generated that follows the depth and layout of the user's video",
    "pose": "a new video is generated in which people follow the body movement of the user's video",
    "inpainting": "a masked region of the user's video is regenerated; describe what should fill it",
    "outpainting": "the user's video is extended beyond its borders; describe the whole, wider scene",
    "reframe": "the user's video is extended to a new aspect ratio; describe the whole, wider scene",
}
DEFAULT_TASK = "a video is generated or edited from the user's description"
MAX_NEW_TOKENS = 200  # about 150 English words: room for the 120 asked for, a hard stop after that


def system_message(task: str | None) -> str:
    return SYSTEM_PROMPT.format(task=TASK_DESCRIPTIONS.get(task or "", DEFAULT_TASK))


def _clean(text: str) -> str:
    text = " ".join(text.split())  # one paragraph
    return re.sub(r'^["\'“]+|["\'”]+$', "", text).strip()


class PromptExpander:
    def __init__(self, model, tokenizer, device: torch.device, max_new_tokens: int = MAX_NEW_TOKENS) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_new_tokens = max_new_tokens

    def messages(self, prompt: str, task: str | None) -> list[dict[str, str]]:
        return [{"role": "system", "content": system_message(task)}, {"role": "user", "content": prompt}]

    def chat_text(self, prompt: str, task: str | None = None) -> str:
        """The exact text the model is given (the folder's chat template applied)."""
        return self.tokenizer.apply_chat_template(
            self.messages(prompt, task), tokenize=False, add_generation_prompt=True
        )

    @torch.inference_mode()
    def expand_prompt(self, prompt: str, task: str | None = None) -> str:
        """A richer version of `prompt`; `prompt` itself when it is blank or nothing usable comes back."""
        if not prompt.strip():
            return prompt
        inputs = self.tokenizer(self.chat_text(prompt, task), return_tensors="pt", add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        output = self.model.generate(
            **inputs,
            do_sample=False,  # greedy: deterministic
            max_new_tokens=self.max_new_tokens,
            pad_token_id=pad_id,
        )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        text = _clean(self.tokenizer.decode(new_tokens, skip_special_tokens=True))
        return text or prompt


def load_prompt_expander(folder: Path, device=None, max_new_tokens: int = MAX_NEW_TOKENS) -> PromptExpander:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = require_folder(folder, "prompt-expansion LLM", ("config.json",))
    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not tokenizer.chat_template:
        raise ValueError(f"the tokenizer in {folder} has no chat template; use an instruct model")
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=default_dtype(dev))
    return PromptExpander(model.to(dev).eval(), tokenizer, dev, max_new_tokens)
