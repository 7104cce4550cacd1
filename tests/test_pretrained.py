"""Tests for pretrained.py and safetensors_io.py: Hugging Face GPT-2 directories in and out.

Without PyTorch, the committed fixture tests/fixtures/gpt2_tiny/ (a tiny random GPT-2
written by transformers, see make_gpt2_fixture.py) checks that the import gives
transformers' logits and greedy tokens. With torch and transformers installed (the
`crosscheck` extra), random GPT-2s built here are compared with GPT2LMHeadModel, and
the export is loaded back by transformers.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tinygrad_gpt import cli
from tinygrad_gpt.checkpoint import save_checkpoint
from tinygrad_gpt.gpt import GPT, GPTConfig
from tinygrad_gpt.pretrained import export_pretrained, load_pretrained
from tinygrad_gpt.safetensors_io import SafetensorsFile
from tinygrad_gpt.tensor import no_grad
from tinygrad_gpt.tokenizers import CharTokenizer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "gpt2_tiny"
REFERENCE = np.load(FIXTURE / "reference.npz", allow_pickle=False)
WEIGHT_FILES = ("config.json", "model.safetensors")


def weights_only(tmp_path, name="gpt2"):
    """A copy of the fixture's config and weights (no tokenizer files) in a new directory."""
    directory = tmp_path / name
    directory.mkdir()
    for file in WEIGHT_FILES:
        shutil.copy(FIXTURE / file, directory / file)
    return directory


def fixture_tensors():
    with SafetensorsFile(FIXTURE / "model.safetensors") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def all_logits(model, idx):
    """Logits (B, T, V) at every position (forward without targets keeps only the last)."""
    with no_grad():
        logits, _ = model(idx, targets=np.zeros_like(idx))
    return logits.data


def parameters(model):
    return {name: p.data for name, p in model.named_parameters()}


# ---- the import against transformers' numbers (the committed fixture) -------------------
def test_fixture_logits_match_transformers_in_float32(tmp_path):
    model, tokenizer = load_pretrained(weights_only(tmp_path))
    assert tokenizer is None  # no vocab.json / merges.txt in the copy
    assert model.config.gelu_approximate == "tanh" and model.config.vocab_size == 300
    # float32 with sums of up to 4C = 128 terms computed in another order than PyTorch's:
    # each logit (magnitude ~1-10) may differ by a few hundred ulps, well under 1e-4.
    np.testing.assert_allclose(all_logits(model, REFERENCE["idx"]), REFERENCE["logits_float32"], rtol=0, atol=1e-4)


def test_fixture_logits_match_transformers_in_float64(tmp_path):
    model, _ = load_pretrained(weights_only(tmp_path))
    model.to(np.float64)
    # The same weights (exact float32 values) computed in float64 by both: rounding alone, ~1e-15.
    np.testing.assert_allclose(all_logits(model, REFERENCE["idx"]), REFERENCE["logits_float64"], rtol=0, atol=1e-10)


def test_fixture_greedy_generation_matches_transformers(tmp_path):
    model = GPT.from_pretrained(weights_only(tmp_path))
    prompts = REFERENCE["greedy"][:, :5]
    out = model.generate(prompts, REFERENCE["greedy"].shape[1] - 5, temperature=0)
    np.testing.assert_array_equal(out, REFERENCE["greedy"])


def test_the_prefixed_spelling_and_a_tied_lm_head_load_the_same_model(tmp_path):
    """save_pretrained of transformers 5 writes transformer.h.0...; lm_head.weight may be present."""
    hub = load_pretrained(weights_only(tmp_path, "hub"))[0]
    directory = tmp_path / "saved"
    directory.mkdir()
    shutil.copy(FIXTURE / "config.json", directory / "config.json")
    tensors = {f"transformer.{name}": array for name, array in fixture_tensors().items() if ".attn.bias" not in name}
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"]
    save_file(tensors, str(directory / "model.safetensors"))
    saved = load_pretrained(directory)[0]
    for name, array in parameters(hub).items():
        np.testing.assert_array_equal(parameters(saved)[name], array, err_msg=name)


def test_conv1d_weights_are_transposed_into_the_linear_layout(tmp_path):
    model, _ = load_pretrained(weights_only(tmp_path))
    tensors = fixture_tensors()
    np.testing.assert_array_equal(model.transformer.h[1].attn.c_attn.weight.data, tensors["h.1.attn.c_attn.weight"].T)
    np.testing.assert_array_equal(model.transformer.h[0].mlp.c_proj.weight.data, tensors["h.0.mlp.c_proj.weight"].T)
    np.testing.assert_array_equal(model.transformer.ln_f.bias.data, tensors["ln_f.bias"])
    assert model.lm_head.weight is model.transformer.wte.weight


def test_float16_weights_load_as_their_float32_values(tmp_path):
    directory = weights_only(tmp_path)
    half = {name: array.astype(np.float16) for name, array in fixture_tensors().items()}
    save_file(half, str(directory / "model.safetensors"))
    model, _ = load_pretrained(directory)
    assert model.transformer.wte.weight.dtype == np.float32
    np.testing.assert_array_equal(model.transformer.wpe.weight.data, half["wpe.weight"].astype(np.float32))


def bfloat16_bytes(array):
    """The bfloat16 truncation of a float32 array, as raw little-endian bytes, and its values."""
    bits = (np.ascontiguousarray(array, np.float32).view(np.uint32) >> 16).astype("<u2")
    return bits.tobytes(), (bits.astype(np.uint32) << 16).view(np.float32)


def write_safetensors_by_hand(path, tensors):
    """The format written out: an 8-byte little-endian header length, the JSON header of
    each tensor's dtype, shape and [begin, end) data offsets, then the raw bytes."""
    header, offset = {}, 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    encoded = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little") + encoded + b"".join(data for _, _, data in tensors.values()))


def test_bfloat16_weights_are_widened_to_float32_exactly(tmp_path):
    directory = weights_only(tmp_path)
    tensors, expected = {}, {}
    for name, array in fixture_tensors().items():
        data, expected[name] = bfloat16_bytes(array)
        tensors[name] = ("BF16", array.shape, data)
    write_safetensors_by_hand(directory / "model.safetensors", tensors)
    model, _ = load_pretrained(directory)
    np.testing.assert_array_equal(model.transformer.h[0].attn.c_attn.weight.data, expected["h.0.attn.c_attn.weight"].T)
    np.testing.assert_array_equal(model.transformer.wte.weight.data, expected["wte.weight"])
    assert np.abs(model.transformer.wte.weight.data - fixture_tensors()["wte.weight"]).max() > 0  # really rounded


def test_dropout_is_the_callers_choice_and_the_model_starts_in_eval_mode(tmp_path):
    model, _ = load_pretrained(weights_only(tmp_path), dropout=0.1)
    assert model.config.dropout == 0.1 and model.transformer.drop.p == 0.1
    assert not model.training


def test_the_tokenizer_loads_from_the_same_directory_and_encodes_as_gpt2tokenizer():
    model, tokenizer = load_pretrained(FIXTURE)
    assert tokenizer.vocab_size == model.config.vocab_size == 300
    assert tokenizer.eot_token == json.loads((FIXTURE / "config.json").read_text())["eos_token_id"]
    expected = np.split(REFERENCE["tokenizer_ids"], np.cumsum(REFERENCE["tokenizer_lengths"])[:-1])
    for text, ids in zip(REFERENCE["tokenizer_strings"], expected):
        np.testing.assert_array_equal(tokenizer.encode(str(text)), ids, err_msg=str(text))
        assert tokenizer.decode(ids) == text


def test_a_vocab_and_merges_that_disagree_are_named(tmp_path):
    directory = weights_only(tmp_path)
    shutil.copy(FIXTURE / "vocab.json", directory / "vocab.json")
    (directory / "merges.txt").write_text((FIXTURE / "merges.txt").read_text() + "q zz\n")
    with pytest.raises(ValueError, match="merges.txt line .*'zz'.*not in the vocabulary of .*vocab.json"):
        load_pretrained(directory)


# ---- export and the round trip ------------------------------------------------------------
def test_export_writes_the_hugging_face_layout_and_loads_back_identically(tmp_path):
    model, _ = load_pretrained(weights_only(tmp_path))
    files = export_pretrained(model, None, tmp_path / "out")
    assert files == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu_new"
    assert (config["n_positions"], config["n_embd"], config["n_layer"], config["vocab_size"]) == (64, 32, 2, 300)
    with SafetensorsFile(tmp_path / "out" / "model.safetensors") as f:
        assert f.metadata() == {"format": "pt"}
        assert f.shapes["transformer.h.0.attn.c_attn.weight"] == (32, 96)  # Conv1D: (in, out)
        assert "lm_head.weight" not in f.keys()  # tied
    again, _ = load_pretrained(tmp_path / "out")
    for name, array in parameters(model).items():
        np.testing.assert_array_equal(parameters(again)[name], array, err_msg=name)


def test_export_of_a_bias_free_model_writes_zero_biases_that_compute_the_same(tmp_path):
    config = GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=8, bias=False)
    model = GPT(config)
    export_pretrained(model, None, tmp_path / "out")
    again, _ = load_pretrained(tmp_path / "out")
    assert again.config.bias and not again.transformer.h[0].attn.c_attn.bias.data.any()
    idx = np.arange(8)[None] % 10
    # Only the GELU differs (nanoGPT's exact form is kept as "gelu"): same logits up to float32 rounding.
    np.testing.assert_allclose(all_logits(again, idx), all_logits(model, idx), rtol=0, atol=1e-5)


def test_a_character_tokenizer_round_trips_through_its_own_file(tmp_path):
    model = GPT(GPTConfig(block_size=8, vocab_size=5, n_layer=1, n_head=1, n_embd=4))
    files = export_pretrained(model, CharTokenizer("abcde"), tmp_path / "out")
    assert "tinygpt_tokenizer.json" in files and "vocab.json" not in files
    _, tokenizer = load_pretrained(tmp_path / "out")
    assert tokenizer == CharTokenizer("abcde")


def test_export_refuses_a_directory_that_holds_files_and_leaves_it_untouched(tmp_path):
    model = GPT(GPTConfig(block_size=8, vocab_size=5, n_layer=1, n_head=1, n_embd=4))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("mine")
    with pytest.raises(ValueError, match="already exists and is not an empty directory"):
        export_pretrained(model, None, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == ["config.json"] and (tmp_path / "out" / "config.json").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging directory left behind


# ---- bad input: one sentence naming the file ------------------------------------------------
def test_a_missing_directory_or_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_pretrained(tmp_path / "nowhere")
    directory = weights_only(tmp_path)
    (directory / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_pretrained(directory)


def test_pickled_weights_are_refused_with_a_pointer_to_safetensors(tmp_path):
    directory = weights_only(tmp_path)
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        load_pretrained(directory)
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x04 would run code if unpickled")
    with pytest.raises(ValueError, match="only pytorch_model.bin.*never loads.*model.safetensors"):
        load_pretrained(directory)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "llama"}, "type 'llama'; only GPT-2"),
    ({"activation_function": "relu"}, "activation_function 'relu' is not supported"),
    ({"n_inner": 100}, "n_inner = 100"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"n_head": 5}, "n_embd \\(32\\) must be divisible by n_head \\(5\\)"),
])
def test_a_config_this_gpt_cannot_compute_is_named(tmp_path, change, message):
    directory = weights_only(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=f"config.json.*{message}"):
        load_pretrained(directory)


def test_a_config_that_is_not_json_is_named(tmp_path):
    directory = weights_only(tmp_path)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_pretrained(directory)


def test_an_unsupported_dtype_is_named(tmp_path):
    directory = weights_only(tmp_path)
    tensors = fixture_tensors()
    tensors["wpe.weight"] = tensors["wpe.weight"].astype(np.int32)
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match="model.safetensors: tensor wpe.weight has dtype I32"):
        load_pretrained(directory)


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_a_truncated_or_corrupt_file_is_one_sentence_naming_it(tmp_path, damage):
    directory = weights_only(tmp_path)
    data = (directory / "model.safetensors").read_bytes()
    damaged = data[: len(data) // 2] if damage == "truncate" else data[:8] + b"{garbage" + data[16:]
    (directory / "model.safetensors").write_bytes(damaged)
    with pytest.raises(ValueError, match="model.safetensors is not a valid safetensors file") as error:
        load_pretrained(directory)
    assert "\n" not in str(error.value)


def test_a_shape_that_disagrees_with_the_config_is_named(tmp_path):
    directory = weights_only(tmp_path)
    tensors = fixture_tensors()
    tensors["h.1.mlp.c_fc.weight"] = tensors["h.1.mlp.c_fc.weight"][:, :100]
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match=r"h.1.mlp.c_fc.weight has shape \(32, 100\), but config.json implies \(32, 128\)"):
        load_pretrained(directory)


def test_missing_unexpected_and_untied_tensors_are_named(tmp_path):
    directory = weights_only(tmp_path)
    tensors = fixture_tensors()
    save_file({k: v for k, v in tensors.items() if k != "ln_f.bias"}, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match="lacks the tensor\\(s\\) transformer.ln_f.bias"):
        load_pretrained(directory)
    save_file({**tensors, "h.0.attn.q_proj.weight": tensors["ln_f.bias"]}, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match="h.0.attn.q_proj.weight is not a weight of GPT2LMHeadModel"):
        load_pretrained(directory)
    save_file({**tensors, "lm_head.weight": tensors["wte.weight"] + 1}, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match="lm_head.weight differs from wte.weight"):
        load_pretrained(directory)


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path):
    directory = weights_only(tmp_path)
    chars = "".join(chr(0x4E00 + i) for i in range(301))  # one more token than vocab_size 300
    (directory / "tinygpt_tokenizer.json").write_text(json.dumps({"type": "char", "chars": chars}))
    with pytest.raises(ValueError, match="has 301 tokens, but config.json's vocab_size is 300"):
        load_pretrained(directory)


def test_only_one_of_the_bpe_files_is_named(tmp_path):
    directory = weights_only(tmp_path)
    shutil.copy(FIXTURE / "vocab.json", directory / "vocab.json")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        load_pretrained(directory)


# ---- the command --------------------------------------------------------------------------
def run_main(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_sample_init_from_a_directory_without_a_tokenizer_is_one_line_exit_2(tmp_path, capsys):
    status, _, err = run_main(capsys, "sample", "--init_from", weights_only(tmp_path))
    assert status == 2 and err.count("\n") == 1 and "has no tokenizer" in err, err
    status, _, err = run_main(capsys, "sample", "--init_from", tmp_path / "nowhere")
    assert status == 2 and err.startswith("tinygpt: error: ") and "no such directory" in err, err


def test_sample_init_from_an_exported_character_model(tmp_path, capsys):
    model = GPT(GPTConfig(block_size=16, vocab_size=5, n_layer=1, n_head=1, n_embd=4))
    export_pretrained(model, CharTokenizer("\nabcd"), tmp_path / "out")
    status, out, err = run_main(capsys, "sample", "--init_from", tmp_path / "out", "--max-new-tokens", "7")
    assert status == 0, err
    assert len(out) == 1 + 7 + 1 and set(out) <= set("\nabcd")  # prompt "\n", 7 tokens, print's newline


def test_sample_init_from_a_gpt2_directory_writes_its_greedy_continuation(capsys):
    model, tokenizer = load_pretrained(FIXTURE)
    expected = tokenizer.decode(model.generate(tokenizer.encode("First Citizen")[None], 10, temperature=0)[0])
    status, out, err = run_main(capsys, "sample", "--init_from", FIXTURE, "--prompt", "First Citizen",
                                "--temperature", "0", "--max-new-tokens", "10")
    assert status == 0, err
    assert out == expected + "\n"


def save_tiny_checkpoint(path, tokenizer, vocab_size=5):
    model = GPT(GPTConfig(block_size=8, vocab_size=vocab_size, n_layer=1, n_head=1, n_embd=4))
    arrays = {f"model/{name}": array for name, array in model.state_dict().items()}
    metadata = {"model_config": model.config.to_dict(), "tokenizer": tokenizer and tokenizer.to_dict()}
    save_checkpoint(path, arrays, metadata)
    return model


def test_export_command_writes_a_directory_and_says_the_tokenizer_is_not_gpt2s(tmp_path, capsys):
    model = save_tiny_checkpoint(tmp_path / "ckpt.npz", CharTokenizer("abcde"))
    status, out, err = run_main(capsys, "export", "--ckpt", tmp_path / "ckpt.npz", "--out", tmp_path / "hf")
    assert status == 0, err
    assert "character tokenizer, not GPT-2's" in out
    again, tokenizer = load_pretrained(tmp_path / "hf")
    np.testing.assert_array_equal(again.transformer.h[0].attn.c_attn.weight.data,
                                  model.transformer.h[0].attn.c_attn.weight.data)
    status, _, err = run_main(capsys, "export", "--ckpt", tmp_path / "ckpt.npz", "--out", tmp_path / "hf")
    assert status == 2 and err.count("\n") == 1 and "already exists" in err, err


def test_export_of_a_bpe_checkpoint_writes_gpt2s_tokenizer_files(tmp_path, capsys):
    tokenizer = load_pretrained(FIXTURE)[1]
    save_tiny_checkpoint(tmp_path / "ckpt.npz", tokenizer, vocab_size=tokenizer.vocab_size)
    status, out, err = run_main(capsys, "export", "--ckpt", tmp_path / "ckpt.npz", "--out", tmp_path / "hf")
    assert status == 0 and "note" not in out, err
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] == tokenizer.eot_token
    again = load_pretrained(tmp_path / "hf")[1]
    assert again.vocab == tokenizer.vocab and again.merges == tokenizer.merges


# ---- cross-checks with transformers on PyTorch (optional extra) -----------------------------
@pytest.fixture
def hf():
    """(torch, transformers), or a skip when the crosscheck extra is not installed."""
    reason = "the crosscheck extra (torch==2.13.0, transformers) is not installed"
    return pytest.importorskip("torch", reason=reason), pytest.importorskip("transformers", reason=reason)


def random_hf_gpt2(hf, seed, **config):
    torch, transformers = hf
    torch.manual_seed(seed)
    config = transformers.GPT2Config(bos_token_id=None, eos_token_id=None, **config)  # no <|endoftext|> here
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            gain = 1.0 if ".ln_" in name and name.endswith("weight") else 0.0  # LayerNorm gains near 1
            p.copy_(torch.randn_like(p) * 0.1 + gain)
    return model


@pytest.mark.parametrize("seed, shape", [
    (0, dict(vocab_size=97, n_positions=40, n_embd=48, n_layer=3, n_head=6)),
    (1, dict(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=1, activation_function="gelu")),
])
def test_logits_and_greedy_tokens_match_gpt2lmheadmodel(tmp_path, hf, seed, shape):
    torch = hf[0]
    theirs = random_hf_gpt2(hf, seed, **shape)
    theirs.save_pretrained(tmp_path / "hf")
    model, _ = load_pretrained(tmp_path / "hf")
    idx = np.random.default_rng(seed).integers(0, shape["vocab_size"], (3, shape["n_positions"]))
    with torch.no_grad():
        expected = theirs(torch.tensor(idx)).logits.numpy()  # (B, T, V)
        prompts = torch.tensor(idx[:, :4])  # an explicit mask: else generate takes the id pad_token_id for padding
        greedy = theirs.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=12,
                                 do_sample=False, pad_token_id=0).numpy()  # (B, 16)
    # float32, sums of up to 4C = 192 terms in another order: a few hundred ulps of logits ~1-10.
    np.testing.assert_allclose(all_logits(model, idx), expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(model.generate(idx[:, :4], 12, temperature=0), greedy)


def test_transformers_loads_our_export_and_computes_our_logits(tmp_path, hf):
    torch, transformers = hf
    model = GPT(GPTConfig(block_size=24, vocab_size=50, n_layer=2, n_head=4, n_embd=32, gelu_approximate="tanh"))
    export_pretrained(model, None, tmp_path / "out")
    loaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    idx = np.random.default_rng(5).integers(0, 50, (2, 24))
    with torch.no_grad():
        theirs = loaded(torch.tensor(idx)).logits.numpy()  # (B, T, V)
    # float32 on both sides, sums of up to 128 terms: logits here are ~0.1, so 1e-5.
    np.testing.assert_allclose(theirs, all_logits(model, idx), rtol=0, atol=1e-5)


def test_gpt2tokenizer_reads_our_exported_tokenizer(tmp_path, hf):
    transformers = hf[1]
    model, tokenizer = load_pretrained(FIXTURE)
    export_pretrained(model, tokenizer, tmp_path / "out")
    theirs = transformers.GPT2Tokenizer.from_pretrained(tmp_path / "out")
    for text in REFERENCE["tokenizer_strings"]:
        assert theirs.encode(str(text)) == tokenizer.encode(str(text)).tolist()


# ---- fine-tuning: tinygpt train --init_from --------------------------------------------------
FINE_TUNE = ["--block_size", "16", "--batch_size", "2", "--eval_iters", "1", "--eval_interval", "2",
             "--sample_tokens", "0", "--learning_rate", "1e-3"]


def test_train_init_from_fine_tunes_the_gpt2_and_resumes_and_exports(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("First Citizen: Before we proceed any further, hear me speak.\n" * 30)
    out_dir = tmp_path / "run"
    start, _ = load_pretrained(FIXTURE)
    status, _, err = run_main(capsys, "train", "--init_from", FIXTURE, "--data", text, "--out_dir", out_dir,
                              "--max_iters", "2", *FINE_TUNE)
    assert status == 0, err
    tuned, _ = load_pretrained_checkpoint(out_dir / "ckpt_last.npz")
    assert tuned.config.block_size == 16 and tuned.config.gelu_approximate == "tanh"
    changed = tuned.transformer.h[0].attn.c_attn.weight.data - start.transformer.h[0].attn.c_attn.weight.data
    assert 0 < np.abs(changed).max() < 0.1  # trained from GPT-2's weights, not from a new model
    status, _, err = run_main(capsys, "train", "--resume", "--out_dir", out_dir, "--max_iters", "4")
    assert status == 0, err
    status, _, err = run_main(capsys, "export", "--ckpt", out_dir / "ckpt_last.npz", "--out", tmp_path / "hf")
    assert status == 0, err
    exported, tokenizer = load_pretrained(tmp_path / "hf")
    assert exported.config.block_size == 16 and tokenizer.vocab == load_pretrained(FIXTURE)[1].vocab


def load_pretrained_checkpoint(path):
    from tinygrad_gpt.training_state import load_model

    model, metadata, _ = load_model(path)
    return model, metadata


@pytest.mark.parametrize("flags, message", [
    (["--n_layer", "3"], "--n_layer cannot be set with --init_from"),
    (["--block_size", "65"], "--block_size 65 is longer than the 64 positions"),
    (["--data", "adder"], "adder is a synthetic task"),
    (["--resume"], "give --resume without --init_from"),
])
def test_train_init_from_refuses_settings_it_cannot_honour(tmp_path, capsys, flags, message):
    status, _, err = run_main(capsys, "train", "--init_from", FIXTURE, "--out_dir", tmp_path / "run",
                              "--max_iters", "1", *FINE_TUNE, *flags)
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()
