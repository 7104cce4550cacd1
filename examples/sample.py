"""Write text with a trained checkpoint: `tinygpt sample`, run from a checkout.

    python examples/sample.py --ckpt out-shakespeare-char/ckpt_best.npz --prompt "ROMEO:" --max-new-tokens 300

The flags are the command's (see --help). The checkpoint carries its model
config and tokenizer, so nothing else is needed. What it does, in
tinygrad_gpt/cli.py's run_sample: `load_model(path)`, the tokenizer from the
checkpoint's metadata, then `model.generate` with the KV cache, shaped by
--temperature, --top-k and --top-p, repeatable with --seed.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinygrad_gpt import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(["sample", *sys.argv[1:]]))
