"""Build a tiny random-weight Llama model directory that vLLM can serve on a CPU, with no network.

The model is useless as a language model; it exists so start-up (download, weight load, engine
init, chat completions) can be exercised end to end in seconds. Needs ``torch``, ``safetensors``,
``tokenizers`` and ``transformers``, which vLLM already brings.

    python -m llm_init.demo.tiny_model DIR [--seed N]

``shape`` and ``shards`` make a bigger one with the same tokenizer, for benchmarks where the
weights' bytes matter: wider layers (``ModelShape``) and weights split into several
safetensors files with an index, as Hugging Face checkpoints are.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

VOCAB_SIZE = 1024
HIDDEN_SIZE = 128
INTERMEDIATE_SIZE = 256
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2
# vLLM's CPU attention backend only accepts some head sizes; 32 is the smallest.
HEAD_DIM = HIDDEN_SIZE // NUM_HEADS
MAX_POSITIONS = 2048

PAD, BOS, EOS, IM_START, IM_END = "<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, IM_END]

# ChatML: simple, and its end-of-turn token doubles as a stop token for chat completions.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)



@dataclass(frozen=True, slots=True, kw_only=True)
class ModelShape:
    """A Llama's dimensions; the vocabulary is always the tokenizer's ``VOCAB_SIZE``.
    ``hidden_size // num_heads`` must be a head size vLLM's CPU attention accepts (32, 64,
    128, ...)."""

    hidden_size: int = HIDDEN_SIZE
    intermediate_size: int = INTERMEDIATE_SIZE
    num_layers: int = NUM_LAYERS
    num_heads: int = NUM_HEADS
    num_kv_heads: int = NUM_KV_HEADS

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def weight_bytes(self) -> int:
        """Bytes of the bf16 tensors (the safetensors headers not counted)."""
        kv = self.num_kv_heads * self.head_dim
        layer = (2 * self.hidden_size * self.hidden_size + 2 * kv * self.hidden_size
                 + 3 * self.intermediate_size * self.hidden_size + 2 * self.hidden_size)
        return 2 * (2 * VOCAB_SIZE * self.hidden_size + self.num_layers * layer
                    + self.hidden_size)


TINY = ModelShape()
WEIGHTS_INDEX = "model.safetensors.index.json"

# Files every build writes; a directory missing one was not made by this module. The weights
# are in model.safetensors, or in the shards its index names.
_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def is_complete(model_dir: str | os.PathLike[str]) -> bool:
    """Whether ``model_dir`` holds every file a build writes."""
    path = pathlib.Path(model_dir)
    if not all((path / name).is_file() for name in _FILES):
        return False
    if (path / "model.safetensors").is_file():
        return True
    try:
        index = json.loads((path / WEIGHTS_INDEX).read_text(encoding="utf-8"))
        shards = set(index["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return bool(shards) and all((path / str(name)).is_file() for name in shards)


def build_tiny_model(target_dir: str | os.PathLike[str], *, seed: int = 0,
                     shape: ModelShape = TINY, shards: int = 1) -> pathlib.Path:
    """Build the tiny model into ``target_dir`` (or reuse it there) and return its path.

    Idempotent: a complete directory is returned as is, without checking which seed, shape
    or shard count built it.
    Atomic: the model is built in a temporary directory beside the target and renamed into
    place, so readers and concurrent builders never see a half-written model.
    Deterministic: the same seed, shape and shards give byte-identical files.
    ``shards`` > 1 splits the weights into ``model-0000i-of-0000n.safetensors`` files of about
    equal size (whole tensors, largest first into the smallest file) and writes their index.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    target = pathlib.Path(target_dir).absolute()
    if is_complete(target):
        return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        # Never delete what we did not write: an incomplete non-empty directory is a user's.
        raise FileExistsError(f"{target} exists and is not a complete tiny model")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_model(staging, seed, shape, shards)
        # mkdtemp and safetensors create owner-only modes; the model is meant to be shared.
        staging.chmod(0o755)
        for child in staging.iterdir():
            child.chmod(0o644)
        try:
            # Replaces an empty target directory in one step on POSIX.
            os.replace(staging, target)
        except OSError:
            # A concurrent builder won the race; its model is as good as ours.
            if not is_complete(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_model(out: pathlib.Path, seed: int, shape: ModelShape, shards: int) -> None:
    tokenizer = _train_tokenizer(seed)
    tokenizer.save_pretrained(out)
    _name_tokenizer_class(out / "tokenizer_config.json")
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    _write_json(out / "config.json", _model_config(ids, shape))
    _write_json(
        out / "generation_config.json",
        {
            "bos_token_id": ids[BOS],
            # Stop on either the document end or the end of a chat turn.
            "eos_token_id": [ids[EOS], ids[IM_END]],
            "pad_token_id": ids[PAD],
        },
    )
    _write_weights(out, seed, shape, shards)


def _model_config(ids: dict[str, int], shape: ModelShape) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "initializer_range": 0.02,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        "pad_token_id": ids[PAD],
        "use_cache": True,
    }


def _write_weights(out: pathlib.Path, seed: int, shape: ModelShape, shards: int) -> None:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)

    def normal(*dims: int) -> torch.Tensor:
        # Drawn in float32 so the values do not depend on bf16 sampling support.
        return (torch.randn(*dims, generator=gen) * 0.02).to(torch.bfloat16)

    def ones(n: int) -> torch.Tensor:
        return torch.ones(n, dtype=torch.bfloat16)

    hidden, heads = shape.hidden_size, shape.num_heads * shape.head_dim
    kv, inter = shape.num_kv_heads * shape.head_dim, shape.intermediate_size
    tensors = {"model.embed_tokens.weight": normal(VOCAB_SIZE, hidden)}
    for i in range(shape.num_layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": ones(hidden),
            p + "self_attn.q_proj.weight": normal(heads, hidden),
            p + "self_attn.k_proj.weight": normal(kv, hidden),
            p + "self_attn.v_proj.weight": normal(kv, hidden),
            p + "self_attn.o_proj.weight": normal(hidden, heads),
            p + "post_attention_layernorm.weight": ones(hidden),
            p + "mlp.gate_proj.weight": normal(inter, hidden),
            p + "mlp.up_proj.weight": normal(inter, hidden),
            p + "mlp.down_proj.weight": normal(hidden, inter),
        }
    tensors["model.norm.weight"] = ones(hidden)
    tensors["lm_head.weight"] = normal(VOCAB_SIZE, hidden)
    # vLLM and transformers both look for the "pt" format marker.
    if shards == 1:
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    groups = _balanced(tensors, shards)
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map: dict[str, str] = {}
    for name, group in zip(names, groups, strict=True):
        save_file({k: tensors[k] for k in group}, str(out / name), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(group, name)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(out / WEIGHTS_INDEX, {"metadata": {"total_size": total},
                                      "weight_map": dict(sorted(weight_map.items()))})


def _balanced(tensors: dict[str, Any], shards: int) -> list[list[str]]:
    """Tensor names in ``shards`` groups of about equal bytes: largest first, each into the
    group with the fewest bytes so far (ties: the lower index), so the split is deterministic;
    every group holds at least one tensor."""
    if shards > len(tensors):
        raise ValueError(f"{shards} shards for {len(tensors)} tensors")
    sizes = {k: t.numel() * t.element_size() for k, t in tensors.items()}
    groups: list[list[str]] = [[] for _ in range(shards)]
    loads = [0] * shards
    for name in sorted(sizes, key=lambda k: (-sizes[k], k)):
        i = min(range(shards), key=lambda j: (len(groups[j]) > 0, loads[j], j))
        groups[i].append(name)
        loads[i] += sizes[name]
    return [sorted(g) for g in groups]


def _train_tokenizer(seed: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        # The full byte alphabet keeps every input encodable, whatever the corpus missed.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            # Plain prompts get a BOS like Llama's; rendered chat prompts carry their own.
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    # transformers 5 declares this constructor as untyped (*args, **kwargs).
    tokenizer_cls: Any = PreTrainedTokenizerFast
    return tokenizer_cls(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
    )


_COMMON_WORDS = (
    "the a of to and in is it you that he was for on are with as I his they be at one have "
    "this from or had by hot word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been now "
    "find model replica engine start load weight token cache node download ready serve request "
    "system user assistant hello please answer question help thanks yes"
)


def _corpus(seed: int, lines: int = 4000) -> list[str]:
    """English-like lines with made-up words, numbers and punctuation: enough merges for 1024."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    made_up = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(600)]
    vocabulary = _COMMON_WORDS.split() + made_up
    # Zipf-like weights give the trainer frequent pairs to merge first, as real text does.
    weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]
    corpus = []
    for _ in range(lines):
        words = rng.choices(vocabulary, weights, k=rng.randint(4, 16))
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 9999)))
        line = " ".join(words)
        corpus.append(line[0].upper() + line[1:] + rng.choice(".?!,;:"))
    return corpus


def _name_tokenizer_class(path: pathlib.Path) -> None:
    # Recent transformers record their internal backend name, which older releases (and other
    # loaders) do not know; PreTrainedTokenizerFast is understood by all of them.
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    _write_json(path, data)


def _write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llm_init.demo.tiny_model", description=__doc__)
    parser.add_argument("target_dir", help="directory to create (reused if already complete)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and tokenizer")
    args = parser.parse_args(argv)
    print(build_tiny_model(args.target_dir, seed=args.seed))


if __name__ == "__main__":
    main()
