"""Prompt sets for the harness: text prompts, or saved prompt embeddings.

Sources:
- ``"held-out"``: the built-in model's 30 held-out colour x shape x direction prompts;
- a ``.txt`` file (one prompt per line; blank lines and ``#`` comments skipped) or a ``.json``
  list of strings;
- a ``.safetensors`` or ``.pt`` file of prompt embeddings, for pipelines saved without a text
  encoder: tensors named like the pipeline's own arguments (``prompt_embeds``,
  ``negative_prompt_embeds``, ``pooled_prompt_embeds``, ``prompt_attention_mask``, ...), first
  dimension = prompt. Names for the report may come as a JSON list under the safetensors metadata
  key ``prompts`` (or a ``prompts`` list in the .pt dict).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

HELD_OUT = "held-out"


@dataclass
class Prompt:
    text: str  # the prompt, or a label for embeddings
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [1, ...] tensor

    @property
    def is_text(self) -> bool:
        return not self.embeddings


def load_prompts(source: str | Path) -> list[Prompt]:
    if str(source) == HELD_OUT:
        from ..pipelines.procedural_clips import held_out_prompts

        return [Prompt(p) for p in held_out_prompts()]
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts {source}: no such file (or use '{HELD_OUT}')")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines()]
        prompts = [Prompt(line) for line in lines if line and not line.startswith("#")]
    elif suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise ValueError(f"--prompts {path}: a .json prompt file must hold a list of strings")
        prompts = [Prompt(p) for p in data]
    elif suffix in (".safetensors", ".pt", ".pth"):
        prompts = _embeddings(path)
    else:
        raise ValueError(f"--prompts {path}: use a .txt, .json, .safetensors or .pt file, or '{HELD_OUT}'")
    if not prompts:
        raise ValueError(f"--prompts {path}: no prompts in the file")
    return prompts


def _embeddings(path: Path) -> list[Prompt]:
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        tensors = load_file(path)
        with safe_open(path, "pt") as f:
            metadata = f.metadata() or {}
        names = json.loads(metadata["prompts"]) if "prompts" in metadata else None
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict):
            raise ValueError(f"--prompts {path}: a .pt embeddings file must hold a dict of tensors")
        names = data.pop("prompts", None)
        tensors = data
    if "prompt_embeds" not in tensors:
        raise ValueError(f"--prompts {path}: an embeddings file needs a 'prompt_embeds' tensor [prompts, tokens, dim]; "
                         f"found {sorted(tensors)}")
    n = tensors["prompt_embeds"].shape[0]
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape[0] != n:
            raise ValueError(f"--prompts {path}: '{name}' must be a tensor with {n} rows (one per prompt)")
    names = names or [f"embedding {i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"--prompts {path}: {len(names)} prompt names for {n} embeddings")
    return [Prompt(names[i], {k: t[i : i + 1] for k, t in tensors.items()}) for i in range(n)]


def batch_arguments(prompts: list[Prompt], accepted: set[str], *, guided: bool) -> dict:
    """``pipe(...)`` keyword arguments for a batch of prompts (all text or all embeddings)."""
    if all(p.is_text for p in prompts):
        if "prompt" not in accepted:
            raise ValueError("this pipeline takes no text prompt")
        return {"prompt": [p.text for p in prompts]}
    names = set(prompts[0].embeddings)
    unknown = sorted(n for n in names if n not in accepted)
    if unknown:
        raise ValueError(f"the pipeline takes no argument {', '.join(unknown)} (from the embeddings file)")
    if guided and "negative_prompt_embeds" in accepted and "negative_prompt_embeds" not in names:
        raise ValueError("the embeddings file has no 'negative_prompt_embeds' but guidance > 1 needs them: "
                         "add them to the file or pass --guidance 1")
    return {name: torch.cat([p.embeddings[name] for p in prompts]) for name in names}
