"""Tasks that ship with the package, generated deterministically: no download.

| name | kind | what it asks | chance |
|---|---|---|---|
| `nextline` | multiple choice | which of 4 lines follows two lines of the built-in corpus (Python's stdlib source) | 0.25 |
| `nextline:FILE` | multiple choice | the same over any UTF-8 text file | 0.25 |
| `adder` | generation | minGPT's 2-digit addition (data.AdderTask's held-out problems), exact match | 10^-3 |
| `sorter` | generation | sort 6 tokens of 0-2 (data.SorterTask's held-out problems), exact match | 3^-6 |
| `perplexity[:FILE]` | perplexity | token perplexity and bits per byte (default: the corpus's validation 10%) | vocab size |

`nextline` takes its questions from the last 10% of the text, the split training holds
out for validation, and its few-shot examples from the first 90%. The true line and
three distractors (other lines of the same split, distinct texts, drawn as often as
they occur so that their lengths are distributed as the true lines') each end with their
newline; the context is the two lines before, ending with its newline. Lines are kept
short (at most 40 characters) so question and answer fit the small models' windows.
"""

import numpy as np

from ..data import AdderTask, SorterTask, load_text, pystdlib_corpus
from . import Generation, MultipleChoice, Perplexity, Task

NEXTLINE_SEED = 20240617  # the questions are the same on every machine
NEXTLINE_QUESTIONS = 500
NEXTLINE_CHOICES = 4
NEXTLINE_CONTEXT_LINES = 2
NEXTLINE_MAX_CHARS = 40
VAL_FRACTION = 0.1  # as data.TextDataset


def _corpus(path):
    return (pystdlib_corpus(), "the built-in corpus") if path is None else (load_text(path), path)


def nextline_examples(text, n_questions, generator):
    """Multiple-choice questions "which line comes next?" over the lines of `text`."""
    lines = text.split("\n")
    short = [i for i, line in enumerate(lines) if line.strip() and len(line) <= NEXTLINE_MAX_CHARS]
    # Distractors are drawn from the lines as they occur, not from the set of distinct
    # lines: the true line is an occurrence, so frequent short lines ("        return")
    # must be as likely among the distractors, or the shortest choice would be a better
    # guess than chance (a random model scored 0.38 against 0.25 with the distinct set).
    pool = [lines[i] for i in short]
    candidates = [i for i in short if i >= NEXTLINE_CONTEXT_LINES
                  and "".join(lines[i - NEXTLINE_CONTEXT_LINES : i]).strip()]
    if len(set(pool)) < NEXTLINE_CHOICES or not candidates:
        return []
    picks = generator.choice(len(candidates), size=min(n_questions, len(candidates)), replace=False)
    examples = []
    for i in sorted(candidates[p] for p in picks):
        context = "\n".join(lines[i - NEXTLINE_CONTEXT_LINES : i]) + "\n"
        distractors = []
        while len(distractors) < NEXTLINE_CHOICES - 1:
            line = pool[generator.integers(len(pool))]
            if line != lines[i] and line not in distractors:
                distractors.append(line)
        label = int(generator.integers(NEXTLINE_CHOICES))
        choices = distractors[:label] + [lines[i]] + distractors[label:]
        examples.append(MultipleChoice([context] * NEXTLINE_CHOICES, [c + "\n" for c in choices], label))
    return examples


def nextline(path=None, stride=None):
    text, source = _corpus(path)
    split = int(len(text) * (1 - VAL_FRACTION))
    generator = np.random.default_rng(NEXTLINE_SEED)
    examples = nextline_examples(text[split:], NEXTLINE_QUESTIONS, generator)
    if not examples:
        raise ValueError(f"nextline: the last 10% of {source} has too few short non-blank lines to ask about")
    train = nextline_examples(text[:split], NEXTLINE_QUESTIONS, generator)
    return Task("nextline" if path is None else f"nextline:{path}", examples, train)


def _prompt_answer_task(name, task):
    """A data.py synthetic task as a generation task: digits in, the answer's digits out."""
    def as_text(rows):
        return ["".join(str(int(t)) for t in row) for row in rows]

    def examples(split):
        seq = task.sequences(task.problems(split))  # (N, P + A)
        prompts, answers = as_text(seq[:, : task.prompt_length]), as_text(seq[:, task.prompt_length :])
        return [Generation(p, a, until=(), max_new_tokens=task.answer_length) for p, a in zip(prompts, answers)]

    return Task(name, examples("test"), examples("train"), chance_value=float(task.vocab_size) ** -task.answer_length)


def adder(argument=None, stride=None):
    return _prompt_answer_task("adder", AdderTask())


def sorter(argument=None, stride=None):
    return _prompt_answer_task("sorter", SorterTask())


def perplexity(path=None, stride=None):
    text, _ = _corpus(path)
    if path is None:  # the validation split, which training never saw
        text = text[int(len(text) * (1 - VAL_FRACTION)):]
    return Task("perplexity" if path is None else f"perplexity:{path}", [Perplexity(text, stride)])


BUILTIN_TASKS = {"nextline": nextline, "adder": adder, "sorter": sorter, "perplexity": perplexity}
