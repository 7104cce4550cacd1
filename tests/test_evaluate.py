"""Tests for the evaluation harness (tinygrad_gpt/evaluate.py) and `tinygpt eval`.

The numbers are pinned three ways: identities the log-likelihood must satisfy
(the chain rule, the window, the cache against from-scratch scoring), a committed
fixture of transformers' log-likelihoods on a random GPT-2's weights
(tests/fixtures/eval_reference.npz, made by make_eval_reference.py), and, with the
crosscheck extra installed, the same comparison against transformers live.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrad_gpt import cli, manual_seed
from tinygrad_gpt.evaluate import Evaluator, evaluate, evaluate_task, mean_and_stderr, results_table
from tinygrad_gpt.gpt import GPT, GPTConfig
from tinygrad_gpt.tasks import Generation, MultipleChoice, Task, load_task
from tinygrad_gpt.tokenizers import CharTokenizer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_eval_reference as reference  # noqa: E402

CHARS = "abcdefgh ."


def tiny_model(vocab_size, block_size=8, dtype=np.float64, seed=0):
    manual_seed(seed)
    config = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=16, bias=True)
    return GPT(config).to(dtype)


class LongestMatchTokenizer:
    """A toy subword tokenizer: longest match over a fixed vocabulary, with an end-of-text id.
    It merges across the seam of context and continuation, which a char tokenizer cannot."""

    def __init__(self, pieces, eot_token=None):
        self.pieces, self.eot_token = list(pieces), eot_token
        self.vocab_size = len(self.pieces) + (eot_token is not None)

    def encode(self, text):
        ids, i = [], 0
        while i < len(text):
            piece = max((p for p in self.pieces if text.startswith(p, i)), key=len)
            ids.append(self.pieces.index(piece))
            i += len(piece)
        return np.array(ids, dtype=np.int64)

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids if i < len(self.pieces))


# ---- tokenization: the harness's split ------------------------------------------


def test_context_and_continuation_are_encoded_together_and_split_at_the_context_length():
    tok = LongestMatchTokenizer(["x", "y", "z", " ", "xy", " z"])
    ev = Evaluator(tiny_model(tok.vocab_size), tok)
    ctx, cont = ev.encode_pair("x", "yz")  # "xyz" encodes as [xy, z]: the seam falls inside "xy"
    assert ctx.tolist() == [4] and cont.tolist() == [2]


def test_trailing_whitespace_of_the_context_moves_to_the_continuation():
    tok = LongestMatchTokenizer(["x", "y", "z", " ", "xy", " z"])
    ev = Evaluator(tiny_model(tok.vocab_size), tok)
    ctx, cont = ev.encode_pair("x ", "z")  # scored as "x" + " z", and " z" is one token
    assert ctx.tolist() == [0] and cont.tolist() == [5]
    char = Evaluator(tiny_model(len(CHARS)), CharTokenizer(CHARS))
    ctx, cont = char.encode_pair("ab  ", "c")
    assert char.tokenizer.decode(ctx) == "ab" and char.tokenizer.decode(cont) == "  c"


def test_an_empty_context_is_the_end_of_text_token():
    tok = LongestMatchTokenizer(["a", "b"], eot_token=2)
    ev = Evaluator(tiny_model(tok.vocab_size), tok)
    ctx, cont = ev.encode_pair("", "ab")
    assert ctx.tolist() == [2] and cont.tolist() == [0, 1]
    # The score is then that of the continuation after the end-of-text token.
    logits, _ = ev.model(np.array([[2, 0]]), targets=np.zeros((1, 2), dtype=np.int64))
    logp = logits.data[0] - np.log(np.exp(logits.data[0]).sum(axis=-1, keepdims=True))  # (2, V)
    assert ev.loglikelihood("", "ab")[0] == pytest.approx(logp[0, 0] + logp[1, 1], rel=1e-12)


def test_an_empty_context_without_an_end_of_text_token_is_refused():
    ev = Evaluator(tiny_model(len(CHARS)), CharTokenizer(CHARS))
    with pytest.raises(ValueError, match="no end-of-text token"):
        ev.loglikelihood("", "abc")
    with pytest.raises(ValueError, match="no end-of-text token"):
        ev.loglikelihood("   ", "abc")  # only whitespace: it moves to the continuation


# ---- the primitive ----------------------------------------------------------------


@pytest.fixture(scope="module")
def char_evaluator():
    return Evaluator(tiny_model(len(CHARS)), CharTokenizer(CHARS))


def test_loglikelihood_obeys_the_chain_rule(char_evaluator):
    # log p(bc | a) = log p(b | a) + log p(c | ab): each token is scored at its own position.
    whole, _ = char_evaluator.loglikelihood("ga", "bc")
    first, _ = char_evaluator.loglikelihood("ga", "b")
    second, _ = char_evaluator.loglikelihood("gab", "c")
    assert whole == pytest.approx(first + second, rel=1e-12)
    assert whole < 0


def test_a_window_longer_than_block_size_keeps_its_rightmost_tokens(char_evaluator):
    # block_size 8: 12 context + 3 continuation tokens are read as the last 9, so only the
    # last 6 context tokens matter, and 7 would already be too many to change anything.
    context = "abcdefghabcd"
    long, _ = char_evaluator.loglikelihood(context, "efg")
    assert long == pytest.approx(char_evaluator.loglikelihood(context[-6:], "efg")[0], rel=1e-12)
    assert long != pytest.approx(char_evaluator.loglikelihood(context[-5:], "efg")[0], rel=1e-6)


def test_a_continuation_longer_than_the_block_is_refused(char_evaluator):
    with pytest.raises(ValueError, match="more than block_size 8"):
        char_evaluator.loglikelihood("a", "abcdefghab")


def test_is_greedy_says_whether_the_continuation_is_the_argmax_path(char_evaluator):
    ids = char_evaluator.tokenizer.encode("bad")
    greedy = char_evaluator.model.generate(ids[None], 3, temperature=0)[0, 3:]
    text = char_evaluator.tokenizer.decode(greedy)
    assert char_evaluator.loglikelihood("bad", text)[1] is True
    other = text[:2] + CHARS[(CHARS.index(text[2]) + 1) % len(CHARS)]
    assert char_evaluator.loglikelihood("bad", other)[1] is False


def test_the_shared_kv_cache_gives_the_from_scratch_scores(char_evaluator):
    # Choices of 1 to 5 tokens; the last overflows the window (4 + 5 - 1 > 8) and falls back.
    contexts, choices = ["bead"] * 5, ["a", " b", "cde", "dd", "hgfed"]
    cached = char_evaluator.loglikelihood_choices(contexts, choices, use_cache=True)
    scratch = char_evaluator.loglikelihood_choices(contexts, choices, use_cache=False)
    for (a, greedy_a), (b, greedy_b) in zip(cached, scratch):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12)  # float64: only summation order differs
        assert greedy_a == greedy_b


def test_perplexity_with_stride_one_is_the_sum_of_next_token_loglikelihoods(char_evaluator):
    text = "abcdefgh.abc.dhgfeab"  # no whitespace, which the loglikelihood split would move
    result = char_evaluator.perplexity(text, stride=1)
    expected = -sum(char_evaluator.loglikelihood(text[:i], text[i])[0] for i in range(1, len(text)))
    assert result["nll"] == pytest.approx(expected, rel=1e-12)
    assert result["tokens"] == len(text) - 1 and result["bytes"] == len(text) - 1
    assert result["ppl"] == pytest.approx(math.exp(expected / (len(text) - 1)), rel=1e-12)
    assert result["bits_per_byte"] == pytest.approx(expected / math.log(2) / (len(text) - 1), rel=1e-12)
    # A longer stride gives each token less context, so the score differs.
    assert char_evaluator.perplexity(text, stride=8)["nll"] != pytest.approx(expected, rel=1e-6)


def test_perplexity_windows_batched_give_the_one_at_a_time_scores(char_evaluator):
    text = "abcdefgh.abc.dhgfeab" * 4
    one = char_evaluator.perplexity(text, stride=3, batch_size=1)
    assert char_evaluator.perplexity(text, stride=3, batch_size=5)["nll"] == pytest.approx(one["nll"], rel=1e-12)
    first = char_evaluator.perplexity(text, stride=3, max_tokens=10)
    assert first["tokens"] == 10 and first["nll"] == pytest.approx(
        char_evaluator.perplexity(text[:11], stride=3)["nll"], rel=1e-12)


# ---- metrics ------------------------------------------------------------------------


class FixedScores:
    """An evaluator stand-in whose log-likelihoods are given, to pin the metric arithmetic."""

    def __init__(self, scores):
        self.scores = iter(scores)

    def loglikelihood_choices(self, contexts, continuations, use_cache=True):
        return [(s, False) for s in next(self.scores)]


def test_acc_takes_the_largest_sum_and_acc_norm_the_largest_per_character():
    choices = [" a", " bbbbbbb"]  # 2 and 8 characters
    task = Task("t", [MultipleChoice(["q"] * 2, choices, label) for label in (1, 1, 0)])
    scores = [(-2.0, -4.0), (-1.0, -3.0), (-5.0, -30.0)]  # per character: -1 vs -0.5, -0.5 vs -0.375, -2.5 vs -3.75
    result = evaluate_task(FixedScores(scores), task)
    assert [r["pred"] for r in result["examples"]] == [0, 0, 0]
    assert [r["pred_norm"] for r in result["examples"]] == [1, 1, 0]
    assert result["metrics"]["acc"]["value"] == pytest.approx(1 / 3)
    assert result["metrics"]["acc_norm"]["value"] == pytest.approx(1.0)
    # Standard error of the mean of (0, 0, 1): sample sd sqrt(1/3), over sqrt(3).
    assert result["metrics"]["acc"]["stderr"] == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))
    assert result["metrics"]["acc_norm"]["stderr"] == 0.0
    assert result["chance"] == 0.5


def test_mean_and_stderr():
    mean, stderr = mean_and_stderr([1, 0, 1, 1])
    assert mean == 0.75
    assert stderr == pytest.approx(math.sqrt(0.25 / 4))  # sample variance (3 * 0.25**2 + 0.75**2) / 3 = 0.25, n = 4
    assert mean_and_stderr([1])[1] is None


def test_few_shot_examples_come_from_the_train_split_by_the_seed():
    train = [MultipleChoice([f"t{i}"], [f" {i}"], 0) for i in range(10)]
    task = Task("t", [MultipleChoice(["q"], [" a"], 0)], train)
    seen = {}

    class Recorder:
        def loglikelihood_choices(self, contexts, continuations, use_cache=True):
            seen.setdefault("contexts", []).append(contexts[0])
            return [(-1.0, False)]

    for seed in (1, 1, 2):
        evaluate_task(Recorder(), task, num_fewshot=3, seed=seed)
    first, again, other = seen["contexts"]
    assert first == again != other
    shots = first.split("\n\n")
    assert len(shots) == 4 and shots[-1] == "q"
    assert all(shot in [e.solved() for e in train] for shot in shots[:3])


def test_generation_is_exact_match_after_the_stop_string(char_evaluator):
    target = char_evaluator.greedy_until("bad", (), 3)
    task = Task("g", [Generation("bad", target, until=(), max_new_tokens=3),
                      Generation("bad", "zz", until=(), max_new_tokens=3)], chance_value=0.1)
    result = evaluate_task(char_evaluator, task)
    assert result["metrics"]["exact_match"]["value"] == 0.5
    assert char_evaluator.greedy_until("bad", (target[1],), 3) == target[: target.index(target[1])]


def test_results_table_has_one_row_per_metric():
    results = [{"task": "nextline", "shots": 0, "chance": 0.25,
                "metrics": {"acc": {"value": 0.5, "stderr": 0.01}, "acc_norm": {"value": 0.625, "stderr": None}}}]
    lines = results_table(results).splitlines()
    assert lines[0].split("|")[1:-1] == [" task     ", " shots ", " metric   ", " value  ", " ± stderr ", " chance "]
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["nextline", "0", "acc", "0.5000", "0.0100", "0.2500"]
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == ["nextline", "0", "acc_norm", "0.6250", "", "0.2500"]


def test_a_task_the_vocabulary_cannot_encode_names_the_characters():
    task = Task("t", [MultipleChoice(["abc"], [" Zé"], 0)])
    with pytest.raises(ValueError, match=r"task t has 2 character\(s\).*'Z', 'é'"):
        evaluate(tiny_model(len(CHARS)), CharTokenizer(CHARS), [task])


# ---- against transformers: the committed fixture, and live with the extra ---------


def _our_scores(weights):
    ev = Evaluator(reference.our_model(weights), reference.TOKENIZER)
    return ev, np.array([s for e in reference.TASK for s, _ in ev.loglikelihood_choices(e.contexts, e.choices)])


def _harness_acc(scores):
    """acc and acc_norm computed from per-choice log-likelihoods, straight from the definitions."""
    acc, acc_norm, start = [], [], 0
    for e in reference.TASK:
        lls = scores[start : start + len(e.choices)]
        start += len(e.choices)
        acc.append(float(np.argmax(lls) == e.label))
        acc_norm.append(float(np.argmax(lls / np.array([len(c) for c in e.choices])) == e.label))
    return np.mean(acc), np.mean(acc_norm)


def test_loglikelihoods_match_the_committed_transformers_fixture():
    fixture = np.load(FIXTURES / "eval_reference.npz", allow_pickle=False)
    weights = {k[len("weights/"):]: fixture[k] for k in fixture if k.startswith("weights/")}
    ev, ours = _our_scores(weights)
    pairs = [[c.tolist(), x.tolist()] for c, x in reference.task_tokens(ev)]
    assert pairs == json.loads(str(fixture["tokens"]))  # the same split, so the same tokens were scored
    # float32 model: sums of ~20 float32 log-probabilities agree to ~1e-6; 1e-4 is the bound.
    np.testing.assert_allclose(ours, fixture["loglikelihoods"], rtol=1e-4)
    result = evaluate_task(ev, Task("fixture", reference.TASK))
    expected_acc, expected_acc_norm = _harness_acc(fixture["loglikelihoods"])
    assert result["metrics"]["acc"]["value"] == expected_acc
    assert result["metrics"]["acc_norm"]["value"] == expected_acc_norm


def test_loglikelihoods_match_transformers_live():
    pytest.importorskip("torch", reason="the crosscheck extra (torch, transformers) is not installed")
    pytest.importorskip("transformers", reason="the crosscheck extra (torch, transformers) is not installed")
    hf_model = reference.hf_gpt2(seed=7)  # other weights than the fixture's
    ev, ours = _our_scores(reference.our_weights(hf_model))
    theirs = reference.hf_loglikelihoods(hf_model, reference.task_tokens(ev))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)  # float32 on both sides, as above
    result = evaluate_task(ev, Task("live", reference.TASK))
    assert (result["metrics"]["acc"]["value"], result["metrics"]["acc_norm"]["value"]) == _harness_acc(theirs)


def _directory_scores():
    from tinygrad_gpt.pretrained import load_pretrained

    ev = Evaluator(*load_pretrained(reference.GPT2_TINY))
    pairs = [ev.encode_pair(c, x) for e in reference.BPE_TASK for c, x in zip(e.contexts, e.choices)]
    scores = [s for e in reference.BPE_TASK for s, _ in ev.loglikelihood_choices(e.contexts, e.choices)]
    return ev, pairs, np.array(scores)


def test_a_hugging_face_directory_matches_the_committed_transformers_fixture():
    fixture = np.load(FIXTURES / "eval_reference.npz", allow_pickle=False)
    ev, pairs, ours = _directory_scores()
    assert ev.eot_token is not None and pairs[7][0].tolist() == [ev.eot_token]  # the empty context
    assert [[c.tolist(), x.tolist()] for c, x in pairs] == json.loads(str(fixture["gpt2_tiny/tokens"]))
    np.testing.assert_allclose(ours, fixture["gpt2_tiny/loglikelihoods"], rtol=1e-4)  # float32, as above


def test_a_hugging_face_directory_matches_transformers_live():
    pytest.importorskip("torch", reason="the crosscheck extra (torch, transformers) is not installed")
    transformers = pytest.importorskip("transformers", reason="the crosscheck extra is not installed")
    ev, pairs, ours = _directory_scores()
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(reference.GPT2_TINY).eval()
    theirs = reference.hf_loglikelihoods(hf_model, pairs, block_size=ev.block_size)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    result = evaluate_task(ev, Task("gpt2_tiny", reference.BPE_TASK))
    acc = np.mean([np.argmax(theirs[i : i + len(e.choices)]) == e.label
                   for i, e in zip(np.cumsum([0] + [len(e.choices) for e in reference.BPE_TASK]), reference.BPE_TASK)])
    assert result["metrics"]["acc"]["value"] == acc


# ---- tinygpt eval -----------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A two-iteration run on a small text file: a real checkpoint with a char tokenizer."""
    root = tmp_path_factory.mktemp("eval")
    text = "".join(f"line {i % 7} of the text, {'ab' * (i % 5)}\n" for i in range(300))
    (root / "text.txt").write_text(text)
    status = cli.main(["train", "--data", str(root / "text.txt"), "--out_dir", str(root / "out"), "--max_iters", "2",
                       "--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--block_size", "32",
                       "--batch_size", "2", "--eval_iters", "1", "--sample_tokens", "0"])
    assert status == 0
    return root


def run_main(capsys, *argv):
    try:
        status = cli.main(list(argv))
    except SystemExit as stop:
        status = stop.code
    out, err = capsys.readouterr()
    return status, out, err


def test_tinygpt_eval_prints_the_table_and_writes_every_choice(checkpoint, capsys):
    report = checkpoint / "report.json"
    status, out, err = run_main(capsys, "eval", "--ckpt", str(checkpoint / "out" / "ckpt_last.npz"),
                                "--task", f"nextline:{checkpoint / 'text.txt'}", "--task",
                                f"perplexity:{checkpoint / 'text.txt'}", "--limit", "5", "--report", str(report))
    assert status == 0, err
    assert "| task" in out and "acc_norm" in out and "bits_per_byte" in out
    results = json.loads(report.read_text())["results"]
    first = results[0]
    assert first["shots"] == 0 and first["chance"] == 0.25 and len(first["examples"]) == 5
    assert all(len(e["loglikelihoods"]) == 4 for e in first["examples"])
    assert results[1]["metrics"]["ppl"]["value"] > 1


def assert_one_line_error(status, err, *fragments):
    assert status == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("tinygpt: error: "), err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("lines, fragments", [
    (['{"context": "a", "choices": [" b"], "label": 0}', '{"context": "a", "choices"'], ["bad.jsonl:2", "not valid JSON"]),
    (['{"context": "a", "choices": [" b", " c"], "label": 2}'], ["bad.jsonl:1", "label 2 is out of range for 2 choices"]),
    (['{"context": "a", "choices": [], "label": 0}'], ["bad.jsonl:1", "non-empty list"]),
    (['{"prompt": "a", "answer": "b"}'], ["no known format", "HellaSwag", "WinoGrande", "MMLU"]),
    (['{"context": "a", "choices": [" Q!"], "label": 0}'], ["cannot encode", "'!'", "'Q'"]),
])
def test_tinygpt_eval_bad_task_files_are_one_line(checkpoint, capsys, lines, fragments):
    path = checkpoint / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    status, _, err = run_main(capsys, "eval", "--ckpt", str(checkpoint / "out" / "ckpt_last.npz"), "--task", str(path))
    assert_one_line_error(status, err, *fragments)


def test_tinygpt_eval_names_a_task_that_does_not_exist(checkpoint, capsys):
    status, _, err = run_main(capsys, "eval", "--ckpt", str(checkpoint / "out" / "ckpt_last.npz"),
                              "--task", "hellaswagg")
    assert_one_line_error(status, err, "'hellaswagg' is neither a built-in task nor an existing file")


def test_builtin_tasks_load_by_name():
    adder = load_task("adder")
    assert len(adder.examples) == 1000 and adder.chance() == pytest.approx(1e-3)
    example = adder.examples[0]
    a, b = int(example.context[:2]), int(example.context[2:])
    assert int(example.target[::-1]) == a + b  # the sum's digits, least significant first
