"""Generated text for the embedded demo: the tone task and the tiny base's pretraining corpus.

Both come from the same small world (topics, cue words, tones), so the base knows the words the
task uses. They differ on purpose in *format*: the pretraining text talks about tones in plain
sentences and never uses the task's ``Phrase: ... / Tone: ...`` layout, so the base cannot solve the
task before LoRA tunes it. Both halves were learnt on earlier builds of the tiny base: pretraining text
that used the label words at random made them interchangeable and left every LoRA at chance, and a
base that already knows the task's format scores before any tuning, so no hyperparameter matters.

The task is made hard enough that a sweep shows a difference between good and bad trials: five
tones, negation that flips polarity ("not bad" is positive, "not great" is negative), sarcasm that
uses positive words about bad events, mixed phrases with a cue of each polarity, several cue words
per class, and a generated part after the label (the topic) so ROUGE means something.

Everything is pure Python and seeded with its own ``random.Random``: the same version gives the same
bytes. ``python -m lorasweep.objectives._corpus`` writes ``objectives/assets/tone.jsonl``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# Bump when any list or template below changes: tiny.py hashes it into the base's cache key.
CORPUS_VERSION = 4

TONES = ("positive", "negative", "neutral", "mixed", "sarcastic")
TASK_ROWS = 1500
TASK_SEED = 1234
PRETRAIN_SEED = 4321

# Each topic has a fact of its own. Without one, every topic is used the same way in pretraining,
# their embeddings collapse into one (we measured cosine 0.94) and the base can never copy a topic.
TOPIC_FACTS = {
    "battery": "holds the charge",
    "screen": "shows the picture",
    "camera": "takes the photos",
    "delivery": "brings the parcel to the door",
    "price": "is what you pay",
    "staff": "are the people who help you",
    "service": "is how you are treated",
    "food": "is what you eat",
    "room": "is where you sleep",
    "sound": "is what you hear",
    "keyboard": "is where you type",
    "app": "runs on the phone",
    "coffee": "is what you drink",
    "seat": "is where you sit",
    "charger": "fills the battery",
    "manual": "explains the steps",
}
TOPICS = tuple(TOPIC_FACTS)
POSITIVE = (
    "excellent",
    "great",
    "wonderful",
    "superb",
    "lovely",
    "fantastic",
    "impressive",
    "good",
    "brilliant",
    "perfect",
)
NEGATIVE = (
    "awful",
    "terrible",
    "poor",
    "disappointing",
    "bad",
    "horrible",
    "useless",
    "dreadful",
    "flimsy",
    "annoying",
)
NEUTRAL = ("okay", "average", "standard", "ordinary", "adequate", "typical", "acceptable")
INTENSIFIERS = ("really", "very", "truly", "absolutely", "quite", "so", "incredibly", "pretty")
NEGATORS = ("not", "never", "hardly", "not exactly", "by no means")
# Bad things that happen to a thing; sarcasm pairs them with a positive word.
EVENTS = (
    "broke again",
    "stopped working after a day",
    "died in an hour",
    "arrived late again",
    "failed on the first day",
    "is missing again",
    "crashed twice",
    "fell apart",
)
FILLERS = ("", "", "", "honestly, ", "well, ", "overall, ", "so ")
DAYS = ("monday", "tuesday", "friday", "the weekend")


def _int(rng: random.Random) -> str:
    """An optional intensifier: present about half the time, so it is a cue, not a constant."""
    return rng.choice(INTENSIFIERS) + " " if rng.random() < 0.5 else ""


def _phrase(rng: random.Random, tone: str, topic: str) -> str:
    """One phrase of the given tone about the topic; each tone has several surface forms."""
    pos, neg, neu, ev = rng.choice(POSITIVE), rng.choice(NEGATIVE), rng.choice(NEUTRAL), rng.choice(EVENTS)
    i, n = _int(rng), rng.choice(NEGATORS)
    forms = {
        "positive": [
            f"the {topic} is {i}{pos}",
            f"{i}{pos} {topic}, would buy again",
            f"the {topic} is {n} {neg}",
            f"what a {pos} {topic}!",
            f"i love the {topic}, {i}{pos}",
        ],
        "negative": [
            f"the {topic} is {i}{neg}",
            f"{i}{neg} {topic}, never again",
            f"the {topic} is {n} {pos}",
            f"the {topic} {ev}",
            f"i hate the {topic}, {i}{neg}",
        ],
        "neutral": [
            f"the {topic} is {neu}",
            f"the {topic} arrived on {rng.choice(DAYS)}",
            f"the {topic} is {neu}, nothing special",
            f"the {topic} is neither {pos} nor {neg}",
            f"it is a {neu} {topic}",
        ],
        "mixed": [
            f"the {topic} is {i}{pos} but {neg}",
            f"{pos} {topic}, though a bit {neg}",
            f"the {topic} is {neg}, but {i}{pos} too",
            f"i like the {topic}, but it is {neg}",
            f"the {topic} is {pos} although {neg} at times",
        ],
        "sarcastic": [
            f"oh {pos}, the {topic} {ev}",
            f"just {pos}, the {topic} {ev}",
            f"wow, what a {pos} {topic}, it {ev}",
            f"yeah right, a {i}{pos} {topic}",
            f"{pos}, another {neg} {topic}, thanks a lot",
        ],
    }
    return rng.choice(FILLERS) + rng.choice(forms[tone])


def task_rows(n: int = TASK_ROWS, seed: int = TASK_SEED) -> list[dict[str, str]]:
    """Balanced, shuffled, de-duplicated rows with columns ``phrase``, ``tone`` and ``topic``."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(rows) < n:
        tone = TONES[len(rows) % len(TONES)]  # round-robin keeps the classes balanced
        topic = rng.choice(TOPICS)
        phrase = _phrase(rng, tone, topic)
        if phrase not in seen:
            seen.add(phrase)
            rows.append({"phrase": phrase, "tone": tone, "topic": topic})
    rng.shuffle(rows)
    return rows


def _document(rng: random.Random) -> str:
    """One pretraining document: the tone words used for what they mean, never in the task's format."""
    topic, pos, neg = rng.choice(TOPICS), rng.choice(POSITIVE), rng.choice(NEGATIVE)
    neu, ev = rng.choice(NEUTRAL), rng.choice(EVENTS)
    name = rng.choice(("Ana", "Ben", "Mia", "Sam", "Leo", "Eva"))
    if rng.random() < 0.25:  # a list said twice: copying is what the task's "about the {topic}" needs
        a, b, c = rng.sample(TOPICS, 3)
        return (
            f"{name} checked the {a}, the {b} and the {c}. "
            f"Later {name} checked the {a}, the {b} and the {c} again."
        )
    kind = rng.randrange(10)
    if kind == 0:  # glossary: each cue word with its tone
        word, tone = rng.choice([(pos, "positive"), (neg, "negative"), (neu, "neutral")])
        return f"The word {word} is {tone}. People call a {topic} {word} when they feel {tone} about it."
    if kind == 1:
        return f"{name} said the {topic} was {pos}. {name} felt positive about the {topic}."
    if kind == 2:
        return f"{name} said the {topic} was {neg}. {name} felt negative about the {topic}."
    if kind == 3:
        return f"{name} thought the {topic} was {neu}. It was neither good nor bad, so the view was neutral."
    if kind == 4:
        return (
            f"{name} liked some things and disliked others: the {topic} was {pos} and also {neg}. "
            f"The feelings about the {topic} were mixed."
        )
    if kind == 5:
        return f"When the {topic} {ev}, {name} said it was {pos}. {name} did not mean it; that was sarcastic."
    if kind == 6:  # negation, stated plainly
        if rng.random() < 0.5:
            return f"A {topic} that is not {neg} is fine. Saying not {neg} is a positive thing to say."
        return f"A {topic} that is not {pos} is a letdown. Saying not {pos} is a negative thing to say."
    if kind == 7:  # a quoted phrase with no tone given: the base sees every task word, never a label
        return f'{name} wrote "{_phrase(rng, rng.choice(TONES), topic)}" in a note.'
    # plain description: what each topic is, with no tone word, so topics are told apart but not tied to tones
    return f"The {topic} {TOPIC_FACTS[topic]}. {name} talked about the {topic} on {rng.choice(DAYS)}."


def pretrain_documents(n: int, seed: int = PRETRAIN_SEED) -> list[str]:
    """``n`` pretraining documents; the tokenizer adds eos after each so the base learns to stop."""
    rng = random.Random(seed)
    return [_document(rng) for _ in range(n)]


def write_task(path: Path) -> None:
    """Write the task rows as JSON lines, byte-for-byte reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in task_rows():
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


if __name__ == "__main__":
    out = Path(__file__).parent / "assets" / "tone.jsonl"
    write_task(out)
    print(f"wrote {TASK_ROWS} rows to {out}")
