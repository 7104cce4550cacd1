"""Tests for the task readers and built-in tasks (tinygrad_gpt/tasks/).

Each published format is read from a one-line file holding a row of that
benchmark's published shape; the prompt must be lm-evaluation-harness's, character
for character, since that is what makes our numbers comparable with its.
"""

import json

import numpy as np
import pytest

from tinygrad_gpt.data import AdderTask
from tinygrad_gpt.tasks import Generation, MultipleChoice, load_task
from tinygrad_gpt.tasks.builtin import nextline_examples


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_our_multiple_choice_format_appends_choices_as_written(tmp_path):
    task = load_task(write_jsonl(tmp_path / "mine.jsonl", [{"context": "2 + 2 =", "choices": [" 3", " 4"], "label": 1}]))
    (example,) = task.examples
    assert example == MultipleChoice(["2 + 2 ="] * 2, [" 3", " 4"], 1)
    assert task.name == "mine" and task.chance() == 0.5


def test_our_generation_format(tmp_path):
    task = load_task(write_jsonl(tmp_path / "gen.jsonl", [{"context": "Q: 2+2\nA:", "target": " 4", "until": ["\n"]}]))
    assert task.examples == [Generation("Q: 2+2\nA:", " 4", ("\n",), 32)]


def test_hellaswag_prompt_and_cleanup(tmp_path):
    row = {"activity_label": "Making a cake", "ctx_a": "A woman mixes flour.", "ctx_b": "she [title] pours",
           "ctx": "ignored", "endings": ["it in a pan.", "the  batter [step] out."], "label": "1"}
    (example,) = load_task(write_jsonl(tmp_path / "hellaswag.jsonl", [row])).examples
    # ctx_b capitalized; " [title]" becomes ". "; other [tags] dropped; double spaces closed once.
    assert example.contexts == ["Making a cake: A woman mixes flour. She. pours"] * 2
    assert example.choices == [" it in a pan.", " the batter out."]
    assert example.label == 1


def test_arc_prompt_in_both_published_layouts(tmp_path):
    flat = {"question": "Which is a gas?", "choices": {"text": ["ice", "steam"], "label": ["A", "B"]}, "answerKey": "B"}
    nested = {"question": {"stem": "Which is a gas?", "choices": [{"text": "ice", "label": "1"},
                                                                   {"text": "steam", "label": "2"}]}, "answerKey": "2"}
    for name, row in (("arc.jsonl", flat), ("arc_ai2.jsonl", nested)):
        (example,) = load_task(write_jsonl(tmp_path / name, [row])).examples
        assert example == MultipleChoice(["Question: Which is a gas?\nAnswer:"] * 2, [" ice", " steam"], 1)


def test_winogrande_scores_the_part_after_the_blank(tmp_path):
    row = {"sentence": "The trophy fit in the bag because the _ was small.", "option1": "trophy",
           "option2": "bag", "answer": "2"}
    task = load_task(write_jsonl(tmp_path / "winogrande.jsonl", [row]))
    assert task.examples == [MultipleChoice(["The trophy fit in the bag because the trophy",
                                             "The trophy fit in the bag because the bag"], [" was small."] * 2, 1)]
    assert task.report_acc_norm is False  # the choices are one continuation: only acc means anything


def test_mmlu_prompt_with_its_subject_description(tmp_path):
    row = {"question": " What is 2 + 2? ", "subject": "elementary_mathematics", "choices": ["1", "2", "3", "4"],
           "answer": 3}
    (example,) = load_task(write_jsonl(tmp_path / "mmlu.jsonl", [row])).examples
    assert example.contexts == ["What is 2 + 2?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"] * 4
    assert example.choices == [" A", " B", " C", " D"] and example.label == 3
    assert example.description == "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"


def test_a_train_file_beside_the_task_file_supplies_the_few_shot_examples(tmp_path):
    write_jsonl(tmp_path / "mine_train.jsonl", [{"context": "t", "choices": [" x", " y"], "label": 0}] * 3)
    task = load_task(write_jsonl(tmp_path / "mine.jsonl", [{"context": "q", "choices": [" a"], "label": 0}]))
    assert len(task.train) == 3 and task.train[0].solved() == "t x"


@pytest.mark.parametrize("rows, message", [
    ([{"context": "a", "choices": [" b"], "label": -1}], r"f\.jsonl:1: label -1 is out of range for 1 choices"),
    ([{"context": "a", "choices": [" b"], "label": 0}, {"context": "a", "label": 0, "choices": " b"}],
     r"f\.jsonl:2: 'choices' must be a non-empty list"),
    ([{"context": "a", "choices": [" b"]}, {}], r"no known format"),
    ([{"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}], r"f\.jsonl:1: 'sentence' has no blank"),
    ([{"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "C"}],
     r"f\.jsonl:1: answerKey 'C' is not one of the choice labels"),
])
def test_bad_rows_are_named_by_file_and_line(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        load_task(write_jsonl(tmp_path / "f.jsonl", rows))


def test_a_malformed_line_is_named_by_its_line_number(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"context": "a", "choices": [" b"], "label": 0}\n\n{"context": \n')
    with pytest.raises(ValueError, match=r"f\.jsonl:3: not valid JSON"):
        load_task(str(path))


def test_nextline_is_deterministic_and_its_label_is_the_true_line():
    text = "".join(f"line {i}\n" for i in range(200))
    first = nextline_examples(text, 20, np.random.default_rng(0))
    again = nextline_examples(text, 20, np.random.default_rng(0))
    assert first == again and len(first) == 20
    for example in first:
        previous = int(example.contexts[0].split("\n")[-2].split()[1])
        assert example.choices[example.label] == f"line {previous + 1}\n"
        assert len(set(example.choices)) == 4


def test_builtin_nextline_over_a_file_uses_its_last_tenth(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("".join(f"line {i}\n" for i in range(1000)))
    task = load_task(f"nextline:{path}")
    numbers = [int(e.contexts[0].split()[1]) for e in task.examples]
    assert min(numbers) >= 890 and task.chance() == 0.25  # the last 10% of the characters
    assert all(int(e.contexts[0].split()[1]) < 900 for e in task.train)


def test_adder_task_is_data_adder_held_out_problems():
    task = load_task("adder")
    adder = AdderTask()
    seq = adder.sequences(adder.problems("test"))
    assert [e.context for e in task.examples[:3]] == ["".join(map(str, row[:4])) for row in seq[:3]]
    assert [e.target for e in task.examples[:3]] == ["".join(map(str, row[4:])) for row in seq[:3]]
    assert all(isinstance(e, Generation) and e.max_new_tokens == 3 for e in task.examples)
