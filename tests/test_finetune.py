"""Supervised fine-tuning data: JSONL reading, template, masking, padding, truncation, scoring."""

import json

import numpy as np
import pytest

from tinygrad_gpt.finetune import (
    DEFAULT_TEMPLATE,
    SFTDataset,
    end_token,
    exact_match,
    greedy_completions,
    load_sft_data,
    read_jsonl,
)
from tinygrad_gpt.tokenizers import CharTokenizer

CHARS = "\n :?0123456789AQWabhilpstu"
TOKENIZER = CharTokenizer(CHARS)


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return str(path)


def example(prompt, completion, line=1):
    return (prompt, completion, line)


def dataset(train, val=None, block_size=32, batch_size=4, **kwargs):
    return SFTDataset({"train": train, "val": val or train}, TOKENIZER, block_size, batch_size, **kwargs)


# ---- reading ------------------------------------------------------------------


def test_read_jsonl_returns_the_pairs_with_their_line_numbers(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1", "completion": " 2", "id": 7}, "", {"prompt": "", "completion": "x"}])
    assert read_jsonl(path) == [("1", " 2", 1), ("", "x", 3)]  # blank lines skipped, extra fields ignored


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "a", "completion": ', r"d.jsonl line 2 is not valid JSON"),
        ('["a", "b"]', r"d.jsonl line 2 must be a JSON object"),
        ('{"prompt": "a"}', r'd.jsonl line 2 has no "completion" field'),
        ('{"completion": "a"}', r'd.jsonl line 2 has no "prompt" field'),
        ('{"prompt": 3, "completion": "a"}', r'd.jsonl line 2: "prompt" must be a string, got int'),
        ('{"prompt": "a", "completion": ""}', r"d.jsonl line 2 has an empty completion"),
    ],
)
def test_read_jsonl_names_the_file_and_line_of_a_bad_record(tmp_path, line, message):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1", "completion": " 2"}, line])
    with pytest.raises(ValueError, match=message):
        read_jsonl(path)


def test_read_jsonl_refuses_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_jsonl(str(tmp_path / "none.jsonl"))
    with pytest.raises(ValueError, match="holds no examples"):
        read_jsonl(write_jsonl(tmp_path / "e.jsonl", ["", "  "]))


# ---- encoding and batches -----------------------------------------------------


def test_the_end_token_of_a_char_tokenizer_is_the_newline():
    assert end_token(TOKENIZER) == CHARS.index("\n")
    with pytest.raises(ValueError, match="no end token"):
        end_token(CharTokenizer("abc"))


def test_only_the_completion_and_the_end_token_are_targets():
    data = dataset([example("1", " 2")], block_size=16)
    x, y = data.batch("train", np.array([0]))
    seq = TOKENIZER.encode("Q: 1\nA: 2\n")  # template(prompt) + completion + end
    np.testing.assert_array_equal(x[0], seq[:-1])
    n_prompt = len("Q: 1\nA:")
    expected = np.full(len(seq) - 1, -1)
    expected[n_prompt - 1 :] = seq[n_prompt:]  # predicting " ", "2", "\n"
    np.testing.assert_array_equal(y[0], expected)
    assert TOKENIZER.decode(y[0][y[0] >= 0]) == " 2\n"


def test_batches_are_right_padded_to_the_longest_example():
    data = dataset([example("1", " 2"), example("123", " 4567")])
    x, y = data.batch("train", np.array([0, 1]))
    long_len = len("Q: 123\nA: 4567\n") - 1
    short_len = len("Q: 1\nA: 2\n") - 1
    assert x.shape == y.shape == (2, long_len) and x.dtype == y.dtype == np.int64
    assert np.all(x[0, short_len:] == end_token(TOKENIZER)) and np.all(y[0, short_len:] == -1)
    assert TOKENIZER.decode(y[1][y[1] >= 0]) == " 4567\n"


def test_get_draws_batch_size_examples_of_the_split_reproducibly():
    data = dataset([example("1", " 2")], val=[example("3", " 44")], batch_size=5)
    x1, y1 = data.get("val", np.random.default_rng(0))
    x2, _ = data.get("val", np.random.default_rng(0))
    assert x1.shape[0] == 5 and np.array_equal(x1, x2)
    assert all(TOKENIZER.decode(row[row >= 0]) == " 44\n" for row in y1)
    with pytest.raises(ValueError, match="split must be one of"):
        data.get("test", np.random.default_rng(0))


def test_a_template_without_one_prompt_field_is_refused():
    with pytest.raises(ValueError, match="must contain {prompt} exactly once"):
        dataset([example("1", " 2")], template="Q: {question}\nA:")


def test_braces_in_a_prompt_are_kept_literally():
    data = SFTDataset({"train": [example("{a}", " 1")], "val": [example("1", " 1")]}, CharTokenizer(CHARS + "{}"), 32, 1)
    x, _ = data.batch("train", np.array([0]))
    assert CharTokenizer(CHARS + "{}").decode(x[0]).startswith("Q: {a}\nA:")


def test_too_long_examples_are_refused_unless_truncation_is_on():
    prompt = "1234567890"  # "Q: 1234567890\nA: 9\n" is 19 tokens: x has 18
    with pytest.raises(ValueError, match=r"train line 3: prompt plus completion is 18 tokens, longer than block_size 12.*--truncate"):
        dataset([example(prompt, " 9", line=3)], block_size=12)
    data = dataset([example(prompt, " 9")], block_size=12, truncate=True)
    x, y = data.batch("train", np.array([0]))
    assert x.shape == (1, 12)
    assert TOKENIZER.decode(x[0]) == "4567890\nA: 9"  # the start of the prompt is cut, the completion kept
    assert TOKENIZER.decode(y[0][y[0] >= 0]) == " 9\n"


def test_a_completion_longer_than_the_block_is_refused_even_with_truncation():
    with pytest.raises(ValueError, match="its completion alone is .* longer than block_size 4"):
        dataset([example("1", " 12345")], block_size=4, truncate=True)


def test_characters_the_tokenizer_lacks_are_named():
    with pytest.raises(ValueError, match=r"cannot encode 2 character\(s\).*'x', 'é'"):
        dataset([example("1x", " 2")], val=[example("3", " é")])


def test_a_completion_containing_the_end_token_is_refused():
    with pytest.raises(ValueError, match=r"train line 1: the completion contains the end token '\\n'"):
        dataset([example("1", " 2\n3")])


def test_load_sft_data_holds_out_a_seeded_fraction_or_uses_val_data(tmp_path):
    records = [{"prompt": str(i), "completion": f" {i}"} for i in range(20)]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    data = load_sft_data(path, TOKENIZER, block_size=32, batch_size=2, val_fraction=0.25, seed=1)
    train, val = data.examples["train"], data.examples["val"]
    assert len(val) == 5 and len(train) == 15 and not set(train) & set(val)
    assert load_sft_data(path, TOKENIZER, 32, 2, val_fraction=0.25, seed=1).examples["val"] == val
    val_path = write_jsonl(tmp_path / "v.jsonl", [{"prompt": "7", "completion": " 8"}])
    data = load_sft_data(path, TOKENIZER, 32, 2, val_data=val_path)
    assert len(data.examples["train"]) == 20 and data.examples["val"] == [("7", " 8")]


# ---- scoring ------------------------------------------------------------------


class LookupModel:
    """A stand-in for a GPT whose greedy continuation of each prompt is given as text."""

    def __init__(self, continuations):
        self.continuations = continuations

    def generate(self, idx, max_new_tokens, temperature):
        assert temperature == 0
        rows = [np.concatenate([row, TOKENIZER.encode(self.continuations[TOKENIZER.decode(row)])[:max_new_tokens]])
                for row in idx]
        return np.stack(rows)


def test_greedy_completions_stop_at_the_end_token():
    model = LookupModel({"Q: 1\nA:": " 2\nQ: 9", "Q: 22\nA:": " 44 as it"})
    end = end_token(TOKENIZER)
    assert greedy_completions(model, TOKENIZER, ["Q: 1\nA:", "Q: 22\nA:"], 9, end) == [" 2", " 44 as it"]


def test_exact_match_needs_the_answer_and_then_the_end_token():
    val = [example("1", " 2"), example("3", " 4"), example("5", " 6"), example("7", " 8")]
    data = dataset(val, val=val)
    model = LookupModel({
        "Q: 1\nA:": " 2\n",  # right, then stops
        "Q: 3\nA:": " 45\n",  # a longer answer with the right start: wrong
        "Q: 5\nA:": " 6 is it",  # does not stop: wrong
        "Q: 7\nA:": " 8\nQ: 9",  # right; what follows the end token does not matter
    })
    assert exact_match(model, data, "val") == 0.5
    assert DEFAULT_TEMPLATE == "Q: {prompt}\nA:"


# ---- the command: tinygpt finetune --------------------------------------------

FACTS = [(a, b) for a in range(4) for b in range(4)]
BASE_TEXT = "".join(f"Quick fact: What is {a} plus {b}? It is {a + b}. Also {a} plus {b} is {a + b}.\n"
                    for a, b in FACTS) * 4
TINY_FT = ["--batch_size", "4", "--eval_iters", "1", "--eval_interval", "2", "--log_interval", "1"]


def run_main(capsys, *argv):
    """(exit status, stdout, stderr) of `tinygpt argv` run in this process."""
    from tinygrad_gpt import cli

    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A tiny char GPT pretrained for two steps, and fine-tuning JSONL files for it."""
    from tinygrad_gpt.train import TrainConfig, train

    root = tmp_path_factory.mktemp("base")
    (root / "text.txt").write_text(BASE_TEXT, encoding="utf-8")
    train(TrainConfig(data=str(root / "text.txt"), out_dir=str(root / "base"), n_layer=1, n_head=2, n_embd=16,
                      block_size=32, batch_size=4, max_iters=2, eval_interval=2, eval_iters=1, sample_tokens=0))
    records = [{"prompt": f"What is {a} plus {b}?", "completion": f" {a + b}"} for a, b in FACTS]
    write_jsonl(root / "train.jsonl", records[:12])
    write_jsonl(root / "val.jsonl", records[12:])
    return root


def finetune_args(base_run, out_dir, *extra):
    return ["finetune", "--init_from", base_run / "base" / "ckpt_last.npz", "--data", base_run / "train.jsonl",
            "--val_data", base_run / "val.jsonl", "--out_dir", out_dir, *TINY_FT, *extra]


def test_lora_fine_tuning_trains_only_the_adapters_and_its_checkpoint_samples(base_run, tmp_path, capsys):
    from tinygrad_gpt.train import load_model

    status, out, err = run_main(capsys, *finetune_args(base_run, tmp_path / "ft", "--max_iters", 3, "--lora_rank", 2))
    assert status == 0, err
    assert "held-out exact match" in out and "adapter:" in out
    base, _, _ = load_model(base_run / "base" / "ckpt_last.npz")
    tuned, metadata, arrays = load_model(tmp_path / "ft" / "ckpt_last.npz")  # rebuilds the adapters
    assert metadata["lora"]["rank"] == 2
    tuned_state = tuned.state_dict()
    for name, array in base.state_dict().items():
        np.testing.assert_array_equal(tuned_state[name], array, err_msg=name)  # the base is bit-identical
    assert any(np.any(v != 0) for k, v in tuned_state.items() if k.endswith(".lora_B"))  # the adapters moved
    n_adapter = sum(v.size for k, v in tuned_state.items() if k.endswith((".lora_A", ".lora_B")))
    n_state = sum(v.size for k, v in arrays.items() if k.startswith("optim/exp_avg"))
    assert n_state == 2 * n_adapter  # AdamW's two moments, for the adapters only
    assert any("exact_match" in row for row in metadata["history"] if row.get("eval"))
    status, out, err = run_main(capsys, "sample", "--ckpt", tmp_path / "ft" / "ckpt_last.npz",
                                "--prompt", "Q: What is 1 plus 2?\nA:", "--temperature", "0", "--max-new-tokens", "3")
    assert status == 0, err
    assert out.startswith("Q: What is 1 plus 2?\nA:")


def test_resumed_fine_tuning_ends_where_an_uninterrupted_run_does(base_run, tmp_path, capsys):
    from tinygrad_gpt.train import load_model

    schedule = ["--lr_decay_iters", 4, "--lora_rank", 2]
    assert run_main(capsys, *finetune_args(base_run, tmp_path / "whole", "--max_iters", 4, *schedule))[0] == 0
    assert run_main(capsys, *finetune_args(base_run, tmp_path / "split", "--max_iters", 2, *schedule))[0] == 0
    status, out, err = run_main(capsys, "finetune", "--resume", "--out_dir", tmp_path / "split", "--max_iters", 4)
    assert status == 0, err
    assert "resuming from" in out
    whole = load_model(tmp_path / "whole" / "ckpt_last.npz")[0].state_dict()
    split = load_model(tmp_path / "split" / "ckpt_last.npz")[0].state_dict()
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name], err_msg=name)


def test_merged_model_is_plain_and_gives_the_adapted_logits(base_run, tmp_path, capsys):
    from tinygrad_gpt.nn import LoRALinear
    from tinygrad_gpt.tensor import no_grad
    from tinygrad_gpt.train import load_model

    status, _, err = run_main(capsys, *finetune_args(base_run, tmp_path / "ft", "--max_iters", 3, "--lora_rank", 2,
                                                     "--lora_alpha", 8, "--merge"))
    assert status == 0, err
    adapted = load_model(tmp_path / "ft" / "ckpt_last.npz")[0]
    merged, metadata, _ = load_model(tmp_path / "ft" / "ckpt_merged.npz")
    assert metadata["lora"] is None and not any(isinstance(m, LoRALinear) for m in merged.modules())
    x = np.random.default_rng(0).integers(0, adapted.config.vocab_size, (2, 16))
    with no_grad():
        a, m = adapted(x, x)[0].data, merged(x, x)[0].data
    assert np.abs(a - load_model(base_run / "base" / "ckpt_last.npz")[0](x, x)[0].data).max() > 1e-6  # it moved
    # float32 logits of O(1): merging reassociates one product per layer, ~1e-7 relative each.
    np.testing.assert_allclose(m, a, rtol=1e-4, atol=1e-5)


def test_full_fine_tuning_keeps_optimizer_state_for_every_parameter(base_run, tmp_path, capsys):
    from tinygrad_gpt.train import load_model

    status, out, err = run_main(capsys, *finetune_args(base_run, tmp_path / "ft", "--max_iters", 2))
    assert status == 0, err
    model, metadata, arrays = load_model(tmp_path / "ft" / "ckpt_last.npz")
    assert metadata["lora"] is None and not (tmp_path / "ft" / "adapter.npz").exists()
    n_state = sum(v.size for k, v in arrays.items() if k.startswith("optim/exp_avg"))
    assert n_state == 2 * sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "lines, flags, fragment",
    [
        (['{"prompt": "What is 1 plus 2?", "completion": " 3"}', '{"prompt": "x",'], [], "line 2 is not valid JSON"),
        (['{"prompt": "What is 1 plus 2?"}'], [], 'line 1 has no "completion" field'),
        (['{"prompt": "What is 1 plus 2?", "completion": ""}'], [], "line 1 has an empty completion"),
        (['{"prompt": "What is 1 plus 2? What is 1 plus 2? What is 1 plus 2?", "completion": " 3"}'], [],
         "longer than block_size 32"),
        (['{"prompt": "What is 1 plus 2?", "completion": " 3"}'], ["--lora_rank", "0"], "lora_rank"),
        (['{"prompt": "What is 1 plus 2?", "completion": " 3"}'], ["--lora_rank", "17"], "--lora_rank must be from 1 to 16"),
        (['{"prompt": "What is 1 plus 2?", "completion": " 3"}'], ["--lora_rank", "2", "--lora_targets", "q_proj"],
         "unknown LoRA target 'q_proj'"),
        (['{"prompt": "What is 1 plus 2? \\u00e9", "completion": " 3"}'], [], "cannot encode 1 character(s)"),
        (['{"prompt": "What is 1 plus 2?", "completion": " 3"}'], ["--template", "Q: {question}"], "{prompt}"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_touches_nothing_saved(base_run, tmp_path, capsys, lines, flags, fragment):
    out_dir = tmp_path / "ft"
    assert run_main(capsys, *finetune_args(base_run, out_dir, "--max_iters", 1))[0] == 0
    saved = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    bad = write_jsonl(tmp_path / "bad.jsonl", lines)
    argv = ["finetune", "--init_from", base_run / "base" / "ckpt_last.npz", "--data", bad, "--val_data", bad,
            "--out_dir", out_dir, "--overwrite", *TINY_FT, *flags]
    status, _, err = run_main(capsys, *argv)
    assert status == 2 and err.startswith("tinygpt: error: ") and err.count("\n") == 1, err
    assert fragment in err, err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == saved


def test_finetune_needs_init_from_and_data_and_resume_needs_a_run(tmp_path, capsys):
    status, _, err = run_main(capsys, "finetune", "--data", tmp_path / "d.jsonl", "--out_dir", tmp_path / "o")
    assert status == 2 and "--init_from is required" in err
    status, _, err = run_main(capsys, "finetune", "--resume", "--out_dir", tmp_path / "o")
    assert status == 2 and "no fine-tuning run" in err
    assert not (tmp_path / "o").exists()


def test_export_of_a_lora_fine_tune_writes_the_merged_weights(base_run, tmp_path, capsys):
    pytest.importorskip("safetensors", reason="export writes model.safetensors")
    from tinygrad_gpt.pretrained import load_pretrained
    from tinygrad_gpt.tensor import no_grad
    from tinygrad_gpt.train import load_model

    assert run_main(capsys, *finetune_args(base_run, tmp_path / "ft", "--max_iters", 2, "--lora_rank", 2))[0] == 0
    status, _, err = run_main(capsys, "export", "--ckpt", tmp_path / "ft" / "ckpt_last.npz", "--out", tmp_path / "hf")
    assert status == 0, err
    adapted = load_model(tmp_path / "ft" / "ckpt_last.npz")[0]
    exported = load_pretrained(str(tmp_path / "hf"))[0]
    x = np.random.default_rng(0).integers(0, adapted.config.vocab_size, (2, 16))
    with no_grad():
        # float32 logits of O(1): merging reassociates one product per layer, ~1e-7 relative each.
        np.testing.assert_allclose(exported(x, x)[0].data, adapted(x, x)[0].data, rtol=1e-4, atol=1e-5)
