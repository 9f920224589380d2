"""Caption metrics: corpus BLEU-4 (sacrebleu, offline), exact match and keyword hit rate."""
from __future__ import annotations

import sacrebleu


def bleu4(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU-4 of ``hypotheses`` against one reference each, in [0, 1] (sacrebleu reports 0-100)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"bleu4: {len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        return 0.0
    # The captions are already lower-case words separated by spaces: no tokeniser may split them differently.
    # sacrebleu's 100.0 for a perfect match can divide to 1.0000000000000004; the result rows check [0, 1]
    return min(1.0, sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score / 100.0)


def exact_matches(hypotheses: list[str], references: list[str]) -> list[bool]:
    """Per caption: is the hypothesis exactly the reference."""
    return [h == r for h, r in zip(hypotheses, references, strict=True)]


def keyword_hits(hypotheses: list[str], keywords: list[str]) -> list[bool]:
    """Per caption: does the hypothesis contain its keyword as a word."""
    return [k in h.split() for h, k in zip(hypotheses, keywords, strict=True)]
