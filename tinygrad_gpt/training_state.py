"""What a training checkpoint holds, and how a run is saved and taken up again.

A checkpoint (the file format is `checkpoint.py`'s) stores

    arrays    model/<name>   the model's state_dict
              optim/<name>   the optimizer's state (AdamW's moments, step count)
    metadata  model_config   GPTConfig as a dict: enough to rebuild the model
              train_config   the run's TrainConfig as a dict (data: an absolute path)
              tokenizer      tokenizer.to_dict(), or None for a synthetic task
              task           "adder" / "sorter", or None for text
              data_sha256    SHA-256 of the training text (None for a task)
              iter_num, best_val_loss, history
              rng_state, data_rng_state   both random generators, so a resumed run
                                          continues bit for bit
              lora           None, or a LoRA fine-tune's {rank, alpha, targets} (lora.py):
                             load_model wraps those layers before loading the weights

`load_model(path)` is all a user of a trained model needs; the rest is for
`train.train(..., resume=True)`.
"""

import os

import numpy as np

from . import rng
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .gpt import GPT, GPTConfig
from .lora import apply_lora, lora_config
from .tokenizers import CharTokenizer, tokenizer_from_dict

# What `train` writes besides the model config, and needs to resume.
TRAINING_STATE = ("train_config", "tokenizer", "iter_num", "best_val_loss", "rng_state", "data_rng_state", "history")


def save_training_state(path, model, optimizer_state, train_config, batches, iter_num, best_val_loss, history, data_rng):
    """Write everything needed to continue the run at `iter_num` to the checkpoint `path`
    (`optimizer_state` is the optimizer's state_dict())."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer_state.items()})
    tokenizer = batches.tokenizer
    metadata = {
        "model_config": model.config.to_dict(),
        "train_config": train_config,
        "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
        "task": getattr(batches, "task_name", None),
        "data_sha256": getattr(batches, "text_sha256", None),
        "iter_num": iter_num,
        "best_val_loss": best_val_loss,
        "rng_state": rng.get_rng_state(),
        "data_rng_state": data_rng.bit_generator.state,
        "history": history,
        "lora": lora_config(model),  # None, or the adapters that load_model rebuilds before loading the weights
    }
    save_checkpoint(path, arrays, metadata)


def load_model(path):
    """(model, metadata, arrays) from a checkpoint written by training, with clear errors."""
    arrays, metadata = load_checkpoint(path)
    try:
        config = GPTConfig.from_dict(metadata["model_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} has no valid model config ({error})") from None
    weights = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    dtype = next(iter(weights.values())).dtype if weights else np.dtype(np.float32)
    if dtype not in (np.float32, np.float64):
        raise CheckpointError(f"checkpoint {path} holds {dtype} weights, expected float32 or float64")
    # Convert the model first: loading float64 weights into float32 parameters would round them.
    model = GPT(config).to(dtype)
    try:
        if metadata.get("lora"):  # a LoRA fine-tune's checkpoint: its adapters beside the frozen weights
            apply_lora(model, metadata["lora"]["rank"], metadata["lora"]["alpha"], metadata["lora"]["targets"])
        model.load_state_dict(weights)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} does not match its model config: {error}") from None
    return model, metadata, arrays


def load_model_and_tokenizer(path):
    """(model, tokenizer, metadata) of a checkpoint: the tokenizer it stores, or for a
    synthetic task's model (which stores none) the digits 0 .. vocab_size-1 it reads."""
    model, metadata, _ = load_model(path)
    if metadata.get("tokenizer"):
        tokenizer = tokenizer_from_dict(metadata["tokenizer"])
    else:
        tokenizer = CharTokenizer("0123456789"[: model.config.vocab_size])
    return model, tokenizer, metadata


def load_training_state(path):
    """(metadata, arrays, tokenizer or None) of the checkpoint a run resumes from."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"cannot resume: there is no checkpoint at {path}")
    _, metadata, arrays = load_model(path)  # checks the format, the checksum and the weights' shapes
    missing = [key for key in TRAINING_STATE if key not in metadata]
    if missing:
        raise CheckpointError(f"checkpoint {path} cannot be resumed: it lacks the training state {missing}")
    if not isinstance(metadata["train_config"], dict) or type(metadata["iter_num"]) is not int:
        raise CheckpointError(f"checkpoint {path} cannot be resumed: its train_config or iter_num is damaged")
    tokenizer = None
    if metadata["tokenizer"] is not None:
        try:
            tokenizer = tokenizer_from_dict(metadata["tokenizer"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {path} has an invalid tokenizer ({error})") from None
    return metadata, arrays, tokenizer


def restore_training_state(path, metadata, arrays, model, optimizer, data_rng):
    """Load the saved weights, optimizer state and random states into a fresh run;
    returns (iter_num, best_val_loss, history)."""
    try:
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        optimizer.load_state_dict({k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")})
        rng.set_rng_state(metadata["rng_state"])
        data_rng.bit_generator.state = metadata["data_rng_state"]
        return metadata["iter_num"], float(metadata["best_val_loss"]), list(metadata["history"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} cannot be resumed, its training state is damaged ({error})") from None
