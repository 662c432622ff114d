"""How well a model predicts the eval responses: the summed negative log-likelihood of the labelled
next tokens, and perplexity.

One function for everyone who states the number: the trial (eval_loss, eval_perplexity) and the
parity gate, which recomputes it from ONNX Runtime's logits. Both must mean the same thing.
"""

from __future__ import annotations

import math

import torch

MAX_LOSS = 50.0  # perplexity is capped here: a diverged trial's exp(loss) would overflow


def summed_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """(summed NLL, tokens scored) of the labelled next tokens. logits: [batch, seq, vocab];
    labels: [batch, seq], -100 where no loss is taken (prompts, padding)."""
    target = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target, ignore_index=-100, reduction="sum"
    )
    return float(nll), int((target != -100).sum())


def perplexity(mean_nll: float) -> float:
    return math.exp(min(mean_nll, MAX_LOSS))
