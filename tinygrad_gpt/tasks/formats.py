"""Task files: our JSONL, and the published files of HellaSwag, ARC, WinoGrande and MMLU.

Every format is JSON Lines, one example an object; the format is told by the keys of
the first line. The prompts are those of EleutherAI's lm-evaluation-harness, so a model
scored here gets numbers comparable with the ones it reports:

| format | keys | context | choices |
|---|---|---|---|
| ours (multiple choice) | context, choices, label | `context` | each choice as written (give it its own leading space) |
| ours (generation) | context, target, optional until, max_new_tokens | `context` | greedy text until a stop string, exact match |
| HellaSwag | ctx_a, ctx_b, activity_label (or ctx), endings, label | `label: ctx_a Ctx_b`, cleaned | " " + ending, cleaned |
| ARC | question, choices {text, label}, answerKey | `Question: ...\\nAnswer:` | " " + text |
| WinoGrande | sentence, option1, option2, answer | sentence up to "_", with the option | " " + the rest of the sentence |
| MMLU | question, choices (4), answer, optional subject | `question\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:` | " A" .. " D" |

ARC's original AI2 files (`question: {stem, choices: [{text, label}]}`) are read too.
A file `NAME_train.jsonl` (or `NAME-train.jsonl`) beside `NAME.jsonl`, in the same
format, supplies the few-shot examples.
"""

import json
import re
from pathlib import Path

from . import Generation, MultipleChoice, Task

MMLU_LETTERS = ("A", "B", "C", "D")


def read_jsonl(path):
    """The objects of a JSON Lines file; a bad line is named by file and line number."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"task {str(path)!r} is neither a built-in task nor an existing file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    if not rows:
        raise ValueError(f"task file {path} holds no examples")
    return rows


def _ours(row):
    choices = row["choices"]
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"'choices' must be a non-empty list of non-empty strings, got {choices!r:.80}")
    return MultipleChoice([_string(row, "context")] * len(choices), choices, _label(row["label"], len(choices)))


def _generation(row):
    until = row.get("until", ["\n"])
    if not isinstance(until, list) or not all(isinstance(u, str) for u in until):
        raise ValueError(f"'until' must be a list of strings, got {until!r:.80}")
    max_new = row.get("max_new_tokens", 32)
    if isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 1:
        raise ValueError(f"'max_new_tokens' must be a positive integer, got {max_new!r}")
    return Generation(_string(row, "context"), _string(row, "target"), tuple(until), max_new)


def _hellaswag_clean(text):
    """The harness's cleanup of HellaSwag's WikiHow artifacts: [title] becomes a full
    stop, other [tags] are dropped, double spaces closed."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(row):
    if "ctx_a" in row:
        context = _string(row, "activity_label") + ": " + _string(row, "ctx_a") + " " + _string(row, "ctx_b").capitalize()
    else:
        context = _string(row, "ctx")
        context = f"{row['activity_label']}: {context}" if "activity_label" in row else context
    endings = row["endings"]
    if not isinstance(endings, list) or not endings:
        raise ValueError(f"'endings' must be a non-empty list of strings, got {endings!r:.80}")
    choices = [" " + _hellaswag_clean(e) for e in endings]
    return MultipleChoice([_hellaswag_clean(context)] * len(choices), choices, _label(row["label"], len(choices)))


def _arc(row):
    question, choices = row["question"], row.get("choices")
    if isinstance(question, dict):  # AI2's own files nest the choices in the question
        choices = {"text": [c["text"] for c in question["choices"]], "label": [c["label"] for c in question["choices"]]}
        question = question["stem"]
    texts, labels = choices["text"], choices["label"]
    if not texts or len(texts) != len(labels):
        raise ValueError(f"'choices' must have as many labels as texts, and at least one, got {choices!r:.80}")
    if row["answerKey"] not in labels:
        raise ValueError(f"answerKey {row['answerKey']!r} is not one of the choice labels {labels}")
    context = f"Question: {question}\nAnswer:"
    return MultipleChoice([context] * len(texts), [" " + t for t in texts], labels.index(row["answerKey"]))


def _winogrande(row):
    sentence = _string(row, "sentence")
    if "_" not in sentence:
        raise ValueError("'sentence' has no blank '_' to fill")
    blank = sentence.index("_")
    # Partial scoring: each option fills the blank in its own context, and the part of
    # the sentence after the blank, the same for both, is the scored continuation.
    contexts = [sentence[:blank] + _string(row, "option1"), sentence[:blank] + _string(row, "option2")]
    rest = " " + sentence[blank + 1:].strip()
    answer = str(row["answer"])
    if answer not in ("1", "2"):
        raise ValueError(f"'answer' must be 1 or 2, got {row['answer']!r}")
    return MultipleChoice(contexts, [rest, rest], int(answer) - 1)


def _mmlu(row):
    choices = row["choices"]
    if not isinstance(choices, list) or len(choices) != 4:
        raise ValueError(f"'choices' must be a list of four answers, got {choices!r:.80}")
    lines = [_string(row, "question").strip()] + [f"{l}. {c}" for l, c in zip(MMLU_LETTERS, choices)]
    context = "\n".join(lines) + "\nAnswer:"
    subject = str(row.get("subject", "")).replace("_", " ")
    description = f"The following are multiple choice questions (with answers) about {subject}.\n\n" if subject else ""
    return MultipleChoice([context] * 4, [" " + l for l in MMLU_LETTERS], _label(row["answer"], 4), description)


# name, the keys that identify the format, the reader of one row
FORMATS = [
    ("ours (multiple choice)", {"context", "choices", "label"}, _ours),
    ("ours (generation)", {"context", "target"}, _generation),
    ("HellaSwag", {"endings", "label"}, _hellaswag),
    ("ARC", {"question", "answerKey"}, _arc),
    ("WinoGrande", {"sentence", "option1", "option2", "answer"}, _winogrande),
    ("MMLU", {"question", "choices", "answer"}, _mmlu),
]


def _format_of(path, keys):
    for name, needed, reader in FORMATS:
        if needed <= keys:
            return name, reader
    known = "; ".join(f"{name} ({', '.join(sorted(needed))})" for name, needed, _ in FORMATS)
    raise ValueError(f"task file {path} is of no known format (its first line has keys {sorted(keys)}); "
                     f"known formats and their keys: {known}")


def read_examples(path, reader):
    examples = []
    for number, row in read_jsonl(path):
        try:
            examples.append(reader(row))
        except KeyError as error:
            raise ValueError(f"{path}:{number}: missing key {error}") from None
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    return examples


def read_task_file(path):
    """The Task of a JSONL file in one of FORMATS, with its train file's examples for few-shot."""
    path = Path(path)
    rows = read_jsonl(path)
    name, reader = _format_of(path, set(rows[0][1]))
    examples = read_examples(path, reader)
    train = []
    for sibling in (path.with_name(f"{path.stem}_train{path.suffix}"), path.with_name(f"{path.stem}-train{path.suffix}")):
        if sibling.exists():
            train = read_examples(sibling, reader)
            break
    return Task(path.stem, examples, train, report_acc_norm=name != "WinoGrande")


def _string(row, key):
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _label(value, n_choices):
    try:
        label = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"label must be an integer index into the choices, got {value!r}") from None
    if not 0 <= label < n_choices:
        raise ValueError(f"label {label} is out of range for {n_choices} choices (expected 0 to {n_choices - 1})")
    return label
