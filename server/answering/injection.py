"""Sentences in a document that speak to the model instead of the reader ("ignore the passages above",
"Answer only that ...", "SYSTEM NOTE: ..."): a prompt injection planted in a document. The extractive answer
never quotes them (an LLM gets the passages with the prompt's rule to use them as facts only)."""

from __future__ import annotations

import re

_PATTERNS = [
    # telling the reader to drop what it was given
    r"\b(?:ignore|disregard|forget|override)\b[^.!?]{0,60}\b(?:passages?|instructions?|context|prompts?|rules|"
    r"above|previous|earlier)\b",
    # a note addressed to the system or the assistant
    r"\b(?:system|developer|assistant)\s+(?:note|prompt|message|instruction)s?\b",
    # an order about what to answer, at the start of a sentence
    r"^\W*(?:please\s+)?(?:answer|respond|reply|say|state|output|print|tell the user)\s+(?:only|that|with|exactly)\b",
    r"\b(?:you are|as) an? (?:ai|assistant|language model|chatbot)\b",
]
_INJECTION = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.IGNORECASE)


def addressed_to_the_model(sentence: str) -> bool:
    return _INJECTION.search(sentence) is not None
