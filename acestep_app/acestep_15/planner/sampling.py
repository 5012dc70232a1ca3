"""One sampling step of the 5 Hz LM, in the official order, as a transformers logits processor.

``generate`` runs the conditional rows and their unconditional twins as one batch
(``[cond_0 .. cond_B-1, uncond_0 .. uncond_B-1]``, left-padded together). For every step
``GuidedSampler``:

1. mixes the two halves in float32: ``uncond + cfg_scale * (cond - uncond)`` (classifier-free guidance);
2. applies each sequence's constraint (``constraints.Script``);
3. the repetition penalty, 4. top-k, 5. top-p (transformers' processors; over the conditional ids);
6. divides by the temperature and draws one token per sequence with the request's generator
   (argmax at temperature 0);

and returns scores that allow only the drawn token, in the conditional row and its twin alike, so
``generate`` (greedy) appends the same token to both. Sampling here rather than in ``generate``
keeps the order of the official decoder (transformers would apply the temperature before top-k /
top-p) and makes the twins share every token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from transformers import LogitsProcessor

if TYPE_CHECKING:
    import torch

    from .constraints import Script
    from .planner import SamplingConfig


class GuidedSampler(LogitsProcessor):
    """Guidance, constraints, filtering and a shared draw per step (see the module docstring).

    Args:
        scripts: one constraint script per conditional sequence (None: unconstrained).
        sampling: the sampling configuration.
        generator: the request's ``torch.Generator``, on the logits' device.
    """

    def __init__(self, scripts: Sequence[Script | None], sampling: SamplingConfig, generator: torch.Generator):
        from transformers import RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

        self.scripts = list(scripts)
        self.sampling = sampling
        self.generator = generator
        self.filters: list[LogitsProcessor] = []
        if sampling.repetition_penalty != 1.0:
            self.filters.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
        if sampling.top_k > 0:
            self.filters.append(TopKLogitsWarper(sampling.top_k))
        if 0.0 < sampling.top_p < 1.0:
            self.filters.append(TopPLogitsWarper(sampling.top_p))
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        import torch

        batch = len(self.scripts)
        logits = scores[:batch].float()
        if scores.shape[0] == 2 * batch:
            uncond = scores[batch:].float()
            logits = uncond + self.sampling.cfg_scale * (logits - uncond)
        elif scores.shape[0] != batch:
            raise ValueError(f"expected {batch} or {2 * batch} rows of logits, got {scores.shape[0]}")
        rows = [script.constrain(row) if script is not None else row for script, row in zip(self.scripts, logits)]
        logits = torch.stack(rows)
        ids = input_ids[:batch]
        for step in self.filters:
            logits = step(ids, logits)
        tokens = self.draw(logits)
        for script, token in zip(self.scripts, tokens.tolist()):
            if script is not None:
                script.advance(token)
        self.steps += 1
        chosen = tokens.repeat(scores.shape[0] // batch)
        forced = torch.full_like(scores, float("-inf"))
        forced[torch.arange(scores.shape[0], device=scores.device), chosen] = 0.0
        return forced

    def draw(self, logits: torch.Tensor) -> torch.Tensor:
        import torch

        temperature = self.sampling.temperature
        if temperature <= 0:
            return logits.argmax(dim=-1)
        probabilities = torch.softmax(logits / temperature, dim=-1)
        return torch.multinomial(probabilities, num_samples=1, generator=self.generator).squeeze(1)
