"""The tiny demo model: loadable by transformers, deterministic, reusable, and servable by vLLM."""

from __future__ import annotations

import hashlib
import json
import pathlib
import time

import pytest

from llm_init.demo.tiny_model import ModelShape, build_tiny_model, is_complete

FAST_START_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def digests(path: pathlib.Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_config_and_weights_load(model_dir):
    from safetensors import safe_open
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    assert config.model_type == "llama"
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (1024, 128, 256)
    assert (config.num_hidden_layers, config.num_attention_heads) == (2, 4)
    assert config.num_key_value_heads == 2
    assert config.head_dim == 32
    assert config.max_position_embeddings >= 256

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as weights:
        embed = weights.get_tensor("model.embed_tokens.weight")
        k_proj = weights.get_tensor("model.layers.1.self_attn.k_proj.weight")
    assert str(embed.dtype) == "torch.bfloat16"
    assert tuple(embed.shape) == (1024, 128)
    assert tuple(k_proj.shape) == (64, 128)


def test_tokenizer_and_chat_template(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert len(tokenizer) == 1024
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|bos|>", "<|eos|>")
    assert tokenizer.bos_token_id != tokenizer.eos_token_id

    ids = tokenizer("Hello, tiny model!").input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hello, tiny model!"

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|bos|><|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )
    # Chat markers must be single tokens, or the end of a turn could never be generated.
    for marker in ("<|im_start|>", "<|im_end|>"):
        assert len(tokenizer(marker, add_special_tokens=False).input_ids) == 1

    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in generation["eos_token_id"]


def test_same_seed_same_bytes_and_reuse(model_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again")
    assert digests(again) == digests(model_dir)
    assert digests(build_tiny_model(tmp_path / "other", seed=1)) != digests(model_dir)

    before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    started = time.perf_counter()
    assert build_tiny_model(model_dir) == model_dir
    assert time.perf_counter() - started < 0.5
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == before
    # The staging directory beside the target is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]


def test_fills_empty_dir_and_refuses_foreign_one(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert is_complete(build_tiny_model(empty))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a model")
    with pytest.raises(FileExistsError):
        build_tiny_model(foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_wider_model_in_shards(tmp_path):
    """A shape and a shard count give that Llama, its tensors split whole over about equal
    safetensors files that an index names, and the directory counts as complete."""
    from safetensors import safe_open
    from transformers import AutoConfig

    shape = ModelShape(hidden_size=256, intermediate_size=768, num_layers=1, num_heads=4,
                       num_kv_heads=2)
    model_dir = build_tiny_model(tmp_path / "wide", shape=shape, shards=3)

    config = AutoConfig.from_pretrained(model_dir)
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (
        256, 768, 1)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 64)
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    shards = sorted(model_dir.glob("*.safetensors"))
    assert [p.name for p in shards] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(set(index["weight_map"].values())) == [p.name for p in shards]
    found: dict[str, tuple[int, ...]] = {}
    data_bytes = []
    for shard in shards:
        with safe_open(str(shard), framework="pt") as weights:
            tensors = {k: weights.get_tensor(k) for k in weights.keys()}  # noqa: SIM118
        assert {index["weight_map"][k] for k in tensors} == {shard.name}
        found |= {k: tuple(t.shape) for k, t in tensors.items()}
        data_bytes.append(sum(t.numel() * t.element_size() for t in tensors.values()))
    assert found["model.layers.0.mlp.down_proj.weight"] == (256, 768)
    assert found["model.layers.0.self_attn.k_proj.weight"] == (128, 256)
    assert set(found) == set(index["weight_map"])
    assert sum(data_bytes) == shape.weight_bytes() == index["metadata"]["total_size"]
    assert max(data_bytes) < 2 * min(data_bytes)
    assert is_complete(model_dir)
    (model_dir / shards[1].name).unlink()
    assert not is_complete(model_dir)


@pytest.mark.vllm
def test_vllm_generates(model_dir, monkeypatch):
    import vllm

    for name, value in FAST_START_ENV.items():
        monkeypatch.setenv(name, value)
    llm = vllm.LLM(
        model=str(model_dir),
        dtype="bfloat16",
        enforce_eager=True,
        max_model_len=256,
        max_num_seqs=4,
        max_num_batched_tokens=256,
    )
    try:
        params = vllm.SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)

        completion = llm.generate(["The model is"], params)[0].outputs[0]
        assert len(completion.token_ids) == 8

        chat = llm.chat([{"role": "user", "content": "Hello!"}], params)[0]
        assert chat.prompt_token_ids[:2] == [1, 3]  # <|bos|><|im_start|>
        assert len(chat.outputs[0].token_ids) == 8
    finally:
        # The in-process engine set up torch.distributed in this process; later engines need it
        # torn down.
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        del llm
        cleanup_dist_env_and_memory()
