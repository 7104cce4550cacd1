"""Hugging Face GPT-2 directories in and out: OpenAI's weights as our GPT, ours as theirs.

A GPT-2 as the Hugging Face hub serves it (gpt2, gpt2-medium, gpt2-large, gpt2-xl,
distilgpt2), and as transformers' `GPT2LMHeadModel.save_pretrained` writes it, is a
directory:

    config.json          the GPT2Config: n_layer, n_head, n_embd, n_positions, vocab_size, ...
    model.safetensors    the weights (safetensors_io.py describes the format)
    vocab.json           the byte-level BPE vocabulary, token -> id
    merges.txt           the BPE merges, in the order they apply

Their weights are ours under other names and in another layout:

* Names. The hub's files name the tensors without a prefix (`h.0.attn.c_attn.weight`,
  `wte.weight`); save_pretrained of a GPT2LMHeadModel writes
  `transformer.h.0.attn.c_attn.weight`. Ours are nanoGPT's, always with the prefix.
* Layout. GPT-2's linear layers are `Conv1D`s, y = x @ W + b with W stored (in, out);
  our Linear is PyTorch's, y = x @ W^T + b with W stored (out, in). Those four weights
  per block are transposed on the way in and out.
* Extras. Older files hold each attention layer's causal mask as a buffer (`attn.bias`,
  `attn.masked_bias`); our attention makes its mask, so they are skipped. The head is
  tied to the token embedding, so `lm_head.weight` may be absent; when present it must
  equal `wte.weight`.

GPT-2 differs from nanoGPT's defaults in one computation: its MLP uses the tanh
approximation of GELU ("gelu_new"), which GPTConfig.gelu_approximate = "tanh" selects.
Nothing here unpickles: a directory with only pytorch_model.bin is refused.
"""

import json
import math
import os
import shutil
import tempfile

import numpy as np
from safetensors.numpy import save_file

from .gpt import GPT, GPTConfig
from .safetensors_io import SafetensorsFile

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
SHARDED_INDEX_FILE = "model.safetensors.index.json"  # weights split over several files
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
# A character tokenizer has no GPT-2 files; an exported directory keeps it here instead.
TINYGPT_TOKENIZER_FILE = "tinygpt_tokenizer.json"

# GPT2Config's defaults, which transformers uses for a key config.json leaves out.
HF_DEFAULTS = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
    "tie_word_embeddings": True,
}
# transformers' activation names and the GELU each one is.
GELU_OF_ACTIVATION = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
# The weights stored as Conv1D (in, out), by the end of their name.
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers of transformers' attention, not weights: the causal mask and its fill value.
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")
TIED_HEAD, EMBEDDING = "lm_head.weight", "transformer.wte.weight"


# ---- the configuration ------------------------------------------------------------
def config_from_hf(hf, source, dropout=0.0):
    """Our GPTConfig for a GPT2Config dict `hf` read from `source` (for error messages).

    Refuses the GPT-2 variants our GPT does not compute (another MLP width or layer
    norm epsilon, attention scaled otherwise, cross-attention), naming the setting.
    """
    if not isinstance(hf, dict):
        raise ValueError(f"{source} must hold a JSON object, got {type(hf).__name__}")
    if hf.get("model_type") != "gpt2":
        raise ValueError(
            f"{source} describes a model of type {hf.get('model_type')!r}; only GPT-2 ('gpt2') checkpoints load"
        )
    hf = {**HF_DEFAULTS, **hf}
    activation = hf["activation_function"]
    if activation not in GELU_OF_ACTIVATION:
        raise ValueError(
            f"{source}: activation_function {activation!r} is not supported; expected one of "
            f"{sorted(GELU_OF_ACTIVATION)}"
        )
    unsupported = {
        "n_inner": hf["n_inner"] not in (None, 4 * hf["n_embd"]),
        "layer_norm_epsilon": not math.isclose(hf["layer_norm_epsilon"], 1e-5),
        "scale_attn_weights": hf["scale_attn_weights"] is not True,
        "scale_attn_by_inverse_layer_idx": hf["scale_attn_by_inverse_layer_idx"] is not False,
        "add_cross_attention": hf["add_cross_attention"] is not False,
    }
    for key, differs in unsupported.items():
        if differs:
            raise ValueError(
                f"{source}: {key} = {hf[key]!r} is a GPT-2 variant this GPT does not compute "
                f"(it needs {HF_DEFAULTS[key] if key != 'n_inner' else '4 * n_embd'})"
            )
    try:
        return GPTConfig(
            block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
            n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=dropout, bias=True,
            gelu_approximate=GELU_OF_ACTIVATION[activation],
        )
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def hf_config(config, eot_token=None):
    """The GPT2Config dict (config.json) for our GPTConfig."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new" if config.gelu_approximate == "tanh" else "gelu",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "bos_token_id": eot_token,  # GPT-2 starts and ends documents with <|endoftext|>
        "eos_token_id": eot_token,
        "dtype": "float32",
    }


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None


# ---- the weights --------------------------------------------------------------------
def _our_name(hf_name):
    """nanoGPT's name for a tensor of either Hugging Face spelling."""
    if hf_name == TIED_HEAD or hf_name.startswith("transformer."):
        return hf_name
    return "transformer." + hf_name


def _is_conv1d(name):
    return name.endswith(CONV1D_WEIGHTS)


def _weight_files(directory):
    """The safetensors file(s) of `directory`, refusing a directory with only pickles."""
    single = os.path.join(directory, WEIGHTS_FILE)
    if os.path.isfile(single):
        return [single]
    index = os.path.join(directory, SHARDED_INDEX_FILE)
    if os.path.isfile(index):
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no weight_map of tensor names to files")
        return [os.path.join(directory, name) for name in sorted(set(weight_map.values()))]
    if os.path.isfile(os.path.join(directory, "pytorch_model.bin")):
        raise ValueError(
            f"{directory} holds only pytorch_model.bin, a pickle, which tinygpt never loads because unpickling "
            f"can run code; download the model's {WEIGHTS_FILE} instead (the hub has one for every GPT-2)"
        )
    raise FileNotFoundError(f"{directory} has no {WEIGHTS_FILE}: a GPT-2 directory needs its weights in that file")


def _load_weights(model, paths):
    """Copy every tensor of the safetensors files into `model`, checking names and shapes.

    Tensors are read one at a time into the parameters, so the peak memory is the model
    and one tensor. Raises ValueError naming the file and tensor on any disagreement.
    """
    own = dict(model._named_tensors())  # nanoGPT name -> Parameter (lm_head.weight is wte's)
    loaded, head = set(), None
    for path in paths:
        with SafetensorsFile(path) as f:
            for hf_name in f.keys():
                if hf_name.endswith(MASK_BUFFERS):
                    continue
                name = _our_name(hf_name)
                if name not in own:
                    raise ValueError(f"{path}: tensor {hf_name} is not a weight of GPT2LMHeadModel")
                expected = own[name].shape[::-1] if _is_conv1d(name) else own[name].shape
                if f.shapes[hf_name] != expected:
                    raise ValueError(
                        f"{path}: tensor {hf_name} has shape {f.shapes[hf_name]}, but config.json "
                        f"implies {expected}"
                    )
                array = f.get_tensor(hf_name)  # (expected) in the file's dtype
                if name == TIED_HEAD:
                    head = (path, array)  # checked against wte once every file is read
                    continue
                own[name].data[...] = array.T if _is_conv1d(name) else array  # float32 (out, in)
                loaded.add(name)
    missing = [name for name in own if name not in loaded and name != TIED_HEAD]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ValueError(f"{', '.join(paths)} lacks the tensor(s) {shown} that config.json implies")
    if head is not None and not np.array_equal(head[1].astype(np.float32), own[EMBEDDING].data):
        raise ValueError(
            f"{head[0]}: lm_head.weight differs from wte.weight, but this GPT ties its head to the token embedding"
        )


# ---- the tokenizer --------------------------------------------------------------------
def _load_tokenizer(directory, vocab_size):
    """The directory's tokenizer: GPT-2's BPE files, our exported one, or None."""
    vocab, merges = (os.path.join(directory, name) for name in (VOCAB_FILE, MERGES_FILE))
    ours = os.path.join(directory, TINYGPT_TOKENIZER_FILE)
    if os.path.isfile(vocab) or os.path.isfile(merges):
        for path in (vocab, merges):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{directory} has {VOCAB_FILE} or {MERGES_FILE} but not {path}")
        from .tokenizers import BPETokenizer  # here: the BPE tokenizer is only needed for GPT-2 files

        tokenizer = BPETokenizer.from_files(vocab, merges)
    elif os.path.isfile(ours):
        from .tokenizers import tokenizer_from_dict

        tokenizer = tokenizer_from_dict(_read_json(ours))
    else:
        return None
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"the tokenizer of {directory} has {tokenizer.vocab_size} tokens, but config.json's vocab_size is "
            f"{vocab_size}: ids past {vocab_size - 1} would have no embedding"
        )
    return tokenizer


# ---- in and out ---------------------------------------------------------------------------
def load_pretrained(directory, dropout=0.0):
    """(GPT, tokenizer or None) from a Hugging Face GPT-2 directory, as a user downloads it.

    `directory` holds config.json and model.safetensors (F32, F16 or BF16; either
    spelling of the names), and vocab.json + merges.txt for the tokenizer. `dropout`
    is for fine-tuning (GPT-2's own config says 0.1; inference wants 0). The model is
    float32 and in eval mode; the tokenizer is None when the directory has none.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such directory (expected a Hugging Face GPT-2 directory)")
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}: a GPT-2 directory needs its configuration")
    config = config_from_hf(_read_json(config_path), config_path, dropout=dropout)
    weight_paths = _weight_files(directory)
    tokenizer = _load_tokenizer(directory, config.vocab_size)  # before the weights: cheaper to fail on
    model = GPT(config)
    _load_weights(model, weight_paths)
    return model.eval(), tokenizer


def hf_tensors(model):
    """The model's weights as save_pretrained names them, in the Conv1D layout, float32.

    A model built with bias=False gets zero biases: GPT-2 always has them, and a zero
    bias computes what no bias does.
    """
    tensors = {}
    for name, p in model._named_tensors():
        if name == TIED_HEAD:
            continue  # tied: transformers rebuilds it from wte
        array = p.data.T if _is_conv1d(name) else p.data
        tensors[name] = np.ascontiguousarray(array, dtype=np.float32)
    if not model.config.bias:
        for name, p in list(tensors.items()):
            if name.endswith(".weight") and "wte" not in name and "wpe" not in name:
                out_features = p.shape[-1] if _is_conv1d(name) else p.shape[0]
                tensors[name.removesuffix("weight") + "bias"] = np.zeros(out_features, np.float32)
    return tensors


def export_pretrained(model, tokenizer, directory):
    """Write `model` (and `tokenizer`) as a Hugging Face GPT-2 directory; return the files.

    transformers.GPT2LMHeadModel.from_pretrained(directory) loads the result. A BPE
    tokenizer is saved as vocab.json + merges.txt; a character tokenizer, which GPT-2's
    files cannot hold, goes to tinygpt_tokenizer.json (load_pretrained reads it back).
    `directory` must be new or empty; the files are written to a temporary directory
    beside it and moved into place at the end, so a failure leaves nothing half-written.
    """
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise ValueError(f"{directory} already exists and is not an empty directory; choose a new one")
    parent = os.path.dirname(directory)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"cannot write {directory}: its parent directory {parent} does not exist")
    eot = getattr(tokenizer, "eot_token", None)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        with open(os.path.join(staging, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(hf_config(model.config, eot), f, indent=2)
        save_file(hf_tensors(model), os.path.join(staging, WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None and tokenizer.to_dict()["type"] == "bpe":
            tokenizer.save(staging)  # vocab.json + merges.txt
        elif tokenizer is not None:
            with open(os.path.join(staging, TINYGPT_TOKENIZER_FILE), "w", encoding="utf-8") as f:
                json.dump(tokenizer.to_dict(), f)
        if os.path.isdir(directory):
            os.rmdir(directory)  # empty, checked above
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(os.listdir(directory))
