"""Evaluation tasks: what `tinygpt eval --task NAME_OR_FILE` scores.

A task is a list of examples of one kind:

* `MultipleChoice`: one (context, choice) pair per choice and the index of the right
  one. Most tasks share one context (`contexts` repeats it); WinoGrande has one
  context per choice and a shared continuation.
* `Generation`: a context, the target text, and stop strings: greedy decoding, exact match.
* `Perplexity`: a whole text, scored by a sliding window.

`load_task(name)` knows the built-in tasks (`tasks/builtin.py`, generated on the spot,
no download) and task files (`tasks/formats.py`: our JSONL and the published files of
HellaSwag, ARC, WinoGrande and MMLU).
"""

from dataclasses import dataclass, field


@dataclass
class MultipleChoice:
    contexts: list  # (N,) str, one per choice, each ending where its choice begins
    choices: list  # (N,) str, appended to their context exactly as written
    label: int
    description: str = ""  # text before any few-shot examples (MMLU names its subject)

    def solved(self):
        """The example with its right answer, as a few-shot demonstration."""
        return self.contexts[self.label] + self.choices[self.label]

    def texts(self):
        return [self.description, *self.contexts, *self.choices]


@dataclass
class Generation:
    context: str
    target: str
    until: tuple = ("\n",)  # generation stops before the first of these
    max_new_tokens: int = 32
    description: str = ""

    def solved(self):
        return self.context + self.target

    def texts(self):
        return [self.description, self.context, self.target]


@dataclass
class Perplexity:
    text: str
    stride: int = None  # None: half a block
    description: str = ""

    def texts(self):
        return [self.text]


@dataclass
class Task:
    name: str
    examples: list
    train: list = field(default_factory=list)  # few-shot examples; empty: drawn from `examples`
    chance_value: float = None  # a generation task's chance of an exact match; None: computed
    report_acc_norm: bool = True  # WinoGrande's choices differ in context, not length: acc only

    def chance(self, examples=None):
        """The expected score of a uniform guess: mean of 1 / number of choices."""
        examples = self.examples if examples is None else examples
        if self.chance_value is not None or not examples or not isinstance(examples[0], MultipleChoice):
            return self.chance_value
        return sum(1 / len(e.choices) for e in examples) / len(examples)


def load_task(name, stride=None):
    """The task called `name`: a built-in one (see BUILTIN_TASKS) or a task file's path."""
    from . import builtin, formats

    kind, _, argument = name.partition(":")
    if kind in builtin.BUILTIN_TASKS:
        return builtin.BUILTIN_TASKS[kind](argument or None, stride=stride)
    return formats.read_task_file(name)


__all__ = ["MultipleChoice", "Generation", "Perplexity", "Task", "load_task"]
