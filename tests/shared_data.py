"""Where the tests find the data shared beside the project (``../shared/data``), or why they skip.

The project's checkout sits next to a ``shared`` folder on the development machine; a
user's clone has none, so every test that needs those files skips with the reason. The
folder is looked for beside the repository and then beside each folder above it (a git
worktree may sit one level deeper); ``TINYGPT_SHARED_DATA`` names it explicitly.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir():
    """The ``shared/data`` folder, or None when there is none."""
    if "TINYGPT_SHARED_DATA" in os.environ:
        candidates = [Path(os.environ["TINYGPT_SHARED_DATA"])]
    else:
        candidates = [folder / "shared" / "data" for folder in REPO.parents]
    return next((folder for folder in candidates if folder.is_dir()), None)


def gpt2_vocabulary_files():
    """Paths of GPT-2's ``encoder.json`` and ``vocab.bpe``, or skip the calling test saying why."""
    data = shared_data_dir()
    if data is None or not (data / "gpt2" / "encoder.json").is_file() or not (data / "gpt2" / "vocab.bpe").is_file():
        pytest.skip("GPT-2's vocabulary files (../shared/data/gpt2/encoder.json, vocab.bpe) are not on this machine")
    return data / "gpt2" / "encoder.json", data / "gpt2" / "vocab.bpe"
