"""One configuration system for every Kiln stage.

A `Config` is a tree of dataclasses (one section per concern). It is built from a named preset,
optionally merged with a TOML/YAML file, then with `--set section.key=value` overrides:

    cfg = load_config(preset="tiny", file="my.toml", overrides=["train.max_steps=200"])

Every field carries a `help` string (shown by `kiln config --help-fields`). The resolved config is
saved as JSON with every checkpoint and logged to the tracker, so a run can always be reproduced.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _f(default: Any, help: str) -> Any:
    """A dataclass field with a help string (mutable defaults go through a factory)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    """Shape of the LLaMA-style decoder."""

    vocab_size: int = _f(4096, "Vocabulary size; set from the tokenizer manifest when training.")
    dim: int = _f(128, "Hidden size (d_model).")
    n_layers: int = _f(4, "Number of transformer blocks.")
    n_heads: int = _f(4, "Number of query heads.")
    n_kv_heads: int = _f(4, "Number of key/value heads (grouped-query attention when < n_heads).")
    ffn_dim: int = _f(0, "SwiGLU hidden size; 0 = 8/3·dim rounded up to ffn_multiple_of.")
    ffn_multiple_of: int = _f(64, "Round the derived SwiGLU hidden size up to a multiple of this.")
    max_seq_len: int = _f(256, "Longest context the model is built for (RoPE table size).")
    rope_theta: float = _f(10000.0, "RoPE base frequency.")
    norm_eps: float = _f(1e-5, "RMSNorm epsilon.")
    tie_embeddings: bool = _f(False, "Share the token embedding and output projection weights.")
    init_std: float = _f(
        0.02, "Std of the normal init; residual projections are scaled by 1/sqrt(2·n_layers)."
    )


@dataclass
class DataConfig:
    """Token shards and how the loader walks them."""

    seq_len: int = _f(256, "Training context length in tokens (windows are seq_len + 1 long).")
    shuffle: bool = _f(True, "Visit shards and windows in a seeded random order each epoch.")
    seed: int = _f(1234, "Seed of the data order (independent of the model init seed).")


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = _f(3e-4, "Peak learning rate.")
    min_lr_ratio: float = _f(0.1, "Floor of the decay, as a fraction of the peak learning rate.")
    schedule: str = _f(
        "cosine", "Schedule after warmup: cosine | constant | wsd (warmup-stable-decay)."
    )
    warmup_steps: int = _f(100, "Linear warmup steps from 0 to the peak learning rate.")
    wsd_decay_frac: float = _f(0.2, "WSD: fraction of the run spent in the final linear decay.")
    beta1: float = _f(0.9, "AdamW beta1.")
    beta2: float = _f(0.95, "AdamW beta2.")
    eps: float = _f(1e-8, "AdamW epsilon.")
    weight_decay: float = _f(0.1, "Decoupled weight decay, applied to matrices only (not norms).")
    grad_clip: float = _f(1.0, "Clip the global gradient norm to this (0 disables).")


@dataclass
class TrainConfig:
    """The training loop."""

    max_steps: int = _f(1000, "Optimizer steps to train for.")
    stop_after_steps: int = _f(
        0,
        "Stop this invocation after N steps (0 = run to max_steps); the schedule still spans max_steps, so a later --resume continues seamlessly (time-sliced or preemptible jobs).",
    )
    micro_batch_size: int = _f(8, "Sequences per worker per forward/backward pass.")
    tokens_per_step: int = _f(
        0,
        "Global tokens per optimizer step; 0 = one micro-batch per worker. Must be a multiple of micro_batch_size·seq_len·workers (gradient accumulation makes up the rest).",
    )
    seed: int = _f(1337, "Seed for model init and any sampling.")
    dtype: str = _f(
        "auto", "Compute dtype: auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32."
    )
    compile: bool = _f(False, "Compile the model with torch.compile.")
    log_every: int = _f(10, "Print and track metrics every N steps.")
    eval_every: int = _f(200, "Validation loss every N steps (0 = only at the end).")
    eval_batches: int = _f(20, "Micro-batches per validation pass.")
    sample_every: int = _f(
        0, "Generate samples from sample_prompts every N steps (0 = only at the end)."
    )
    sample_prompts: list = _f(["The ", "Once upon a time"], "Fixed prompts for progress samples.")
    sample_tokens: int = _f(48, "Tokens generated per sample.")
    ckpt_every: int = _f(200, "Save a checkpoint every N steps (and always at the end).")
    keep_checkpoints: int = _f(3, "Keep only the last K checkpoints.")
    max_nonfinite_in_a_row: int = _f(
        5, "Halt after this many consecutive steps with NaN/inf loss or gradients."
    )
    spike_factor: float = _f(
        0.0,
        "Loss-spike policy: roll back to the last checkpoint when loss > factor × its running mean (0 disables).",
    )
    max_rollbacks: int = _f(3, "Halt after this many loss-spike rollbacks.")


@dataclass
class DistConfig:
    """Where and how training runs."""

    workers: int = _f(0, "Ray Train workers; 0 = one plain process without Ray.")
    use_gpu: bool = _f(False, "One GPU per Ray worker (NCCL) instead of CPU workers (gloo).")
    strategy: str = _f(
        "ddp", "Data parallelism: ddp | fsdp (FSDP2, shards params, grads and optimizer state)."
    )
    cpus_per_worker: int = _f(
        0,
        "CPUs reserved per Ray worker (each worker's torch threads); 0 = on a local cluster the "
        "machine's CPUs split evenly among the workers, on an existing cluster 1.",
    )
    max_failures: int = _f(
        2, "Restart training from the last checkpoint up to this many times after a worker dies."
    )
    storage_path: str = _f(
        "",
        "Checkpoint storage for Ray Train: local dir or s3://bucket/prefix (default: OUTPUT/ray).",
    )
    ray_address: str = _f(
        "",
        "Ray cluster: '' starts a local one; ray://… or auto to join; http://HOST:8265 submits a job.",
    )


@dataclass
class TokenizerConfig:
    """BPE tokenizer training and encoding into token shards (`kiln tokenize`)."""

    vocab_size: int = _f(4096, "Vocabulary size of a trained tokenizer (special tokens included).")
    min_frequency: int = _f(2, "A pair must occur this often to become a merge.")
    chat_tokens: int = _f(
        8, "Reserved special tokens <|reserved_0|>… added after <|endoftext|> for fine-tuning."
    )
    max_train_bytes: int = _f(
        1 << 30, "Train the BPE on at most this many bytes of the train split (0 = all)."
    )
    workers: int = _f(2, "Encoding processes.")
    engine: str = _f(
        "auto",
        "Encoder: auto (tiktoken from the same merges when it reproduces tokenizers' ids, else hf) | tiktoken | hf.",
    )
    verify_docs: int = _f(
        256, "Documents per split cross-checked between the fast engine and tokenizers."
    )
    shard_tokens: int = _f(100_000_000, "Most tokens per output shard.")
    segment_chars: int = _f(
        1 << 20, "Long documents are encoded in pieces of about this many characters."
    )


@dataclass
class FilterConfig:
    """Quality heuristics (Gopher, C4, FineWeb); see components/ingest/filters.py for sources."""

    disable: list = _f([], 'Names of filters to switch off, e.g. ["stop_words", "c4_lines"].')
    min_chars: int = _f(50, "Drop documents shorter than this (characters).")
    max_chars: int = _f(10_000_000, "Drop documents longer than this (characters).")
    min_words: int = _f(50, "Gopher: minimum number of words.")
    max_words: int = _f(100_000, "Gopher: maximum number of words.")
    min_mean_word_len: float = _f(3.0, "Gopher: minimum mean word length.")
    max_mean_word_len: float = _f(10.0, "Gopher: maximum mean word length.")
    max_symbol_word_ratio: float = _f(0.1, "Gopher: max ('#' + '...') per word.")
    max_ellipsis_lines: float = _f(0.3, "Gopher: max fraction of lines ending with an ellipsis.")
    max_bullet_lines: float = _f(0.9, "Gopher: max fraction of lines starting with a bullet.")
    min_alpha_words: float = _f(0.8, "Gopher: min fraction of words with an alphabetic character.")
    min_stop_words: int = _f(2, "Gopher: min count of English stop words (the, be, to, …).")
    max_dup_line_frac: float = _f(0.3, "Gopher: max fraction of duplicate lines.")
    max_dup_line_char_frac: float = _f(
        0.2, "Gopher: max fraction of characters in duplicate lines."
    )
    max_top_ngram_frac: list = _f(
        [0.2, 0.18, 0.16], "Gopher: max char fraction of the most common 2-, 3-, 4-gram."
    )
    max_dup_ngram_frac: list = _f(
        [0.15, 0.14, 0.13, 0.12, 0.11, 0.10],
        "Gopher: max char fraction in duplicated 5- to 10-grams.",
    )
    c4_min_line_words: int = _f(
        0, "C4: drop lines with fewer words (0 = off; C4 used 3, drops code-like text)."
    )
    c4_bad_phrases: bool = _f(True, "C4: drop documents with 'lorem ipsum' or a '{' curly bracket.")
    max_short_line_frac: float = _f(
        0.67, "FineWeb: max fraction of lines shorter than 30 characters."
    )
    max_newline_word_ratio: float = _f(0.3, "FineWeb: max newlines per word.")


@dataclass
class DedupConfig:
    """Exact and MinHash-LSH near-duplicate removal (global across workers)."""

    exact: bool = _f(True, "Drop documents whose normalized text was already seen.")
    near: bool = _f(True, "Drop near duplicates found by MinHash LSH.")
    shingle: int = _f(5, "Words per shingle for MinHash.")
    bands: int = _f(14, "LSH bands.")
    rows: int = _f(8, "Hashes per band (bands × rows MinHash permutations).")
    threshold: float = _f(
        0.8, "Candidates sharing a band are duplicates if estimated Jaccard ≥ this (0 = any)."
    )
    seed: int = _f(42, "Seed of the MinHash permutations.")


@dataclass
class IngestConfig:
    """Raw text → cleaned, filtered, deduplicated train/val parquet (`kiln ingest`)."""

    text_field: str = _f("text", "Field (jsonl/json) or column (parquet) holding the text.")
    id_field: str = _f("id", "Field holding a document id; missing ids are derived from file+line.")
    workers: int = _f(2, "Reader/filter processes (dedup and writing stay global and ordered).")
    ray_address: str = _f(
        "", "Run the per-file steps as Ray tasks: '' = local processes, 'local' | 'auto' | ray://…"
    )
    on_bad_utf8: str = _f(
        "replace", "Non-UTF-8 bytes: replace (U+FFFD, counted) | skip (drop the line, counted)."
    )
    max_line_bytes: int = _f(
        64 << 20, "Longer lines/records are rejected (streamed, never held in memory)."
    )
    max_file_bytes: int = _f(
        16 << 30, "Stop a file after this many decompressed bytes (compression-bomb guard)."
    )
    val_fraction: float = _f(0.01, "Fraction of documents (by hash of id) for validation.")
    split_seed: int = _f(0, "Salt of the train/val hash; change it to draw another split.")
    shard_bytes: int = _f(128 << 20, "Most text bytes per parquet shard.")
    languages: list = _f([], 'Keep only these languages (ISO 639-1, e.g. ["en"]); [] = all.')
    min_lang_score: float = _f(0.65, "Minimum language-id probability to keep a document.")
    redact_pii: bool = _f(True, "Replace e-mails, phone numbers and IP addresses (counted).")
    source_weights: dict = _f(
        {}, 'Per-source sampling weight, e.g. {"web": 0.5, "books": 2.0} (default 1).'
    )
    rejects_examples: int = _f(3, "Dropped examples kept per reason in stats.json.")
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)


@dataclass
class StorageConfig:
    """Where artifacts go. Credentials never live here: they come from the data-connection env
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), so they can't leak into logs or MLflow params."""

    root: str = _f(
        "",
        "Artifact root: s3://bucket/prefix, or a local dir; '' = s3://$AWS_S3_BUCKET/kiln when a bucket is set, else WORKDIR/s3.",
    )
    endpoint: str = _f("", "S3 endpoint URL; '' = $AWS_S3_ENDPOINT (unset: the local stand-in).")
    region: str = _f("", "S3 region; '' = $AWS_DEFAULT_REGION, else us-east-1.")
    part_size_mb: int = _f(64, "Multipart part size in MiB (min 5); also the multipart threshold.")
    max_concurrency: int = _f(8, "Parallel part uploads/downloads per file.")
    retries: int = _f(
        5, "Attempts per S3 operation on transient errors (connection, 5xx, throttling)."
    )
    retry_backoff_s: float = _f(
        0.5, "First retry delay in seconds; doubles per attempt, capped at 8 s."
    )


@dataclass
class TrackingConfig:
    """Experiment tracking and the model registry."""

    backend: str = _f("mlflow", "mlflow | file (JSONL under the workdir, no server) | none.")
    uri: str = _f(
        "", "MLflow tracking URI; '' = $MLFLOW_TRACKING_URI, else sqlite:///WORKDIR/mlflow.db."
    )
    experiment: str = _f("kiln", "MLflow experiment that pipeline runs are recorded under.")
    model_name: str = _f("kiln-llama", "Registered model name that publish creates versions of.")
    gate_metric: str = _f(
        "val_loss", "Metric (lower is better) that must beat the champion's to move `champion`."
    )


@dataclass
class EvalConfig:
    """Evaluation of a trained model on the held-out split, and its gate (`kiln evaluate`)."""

    seq_len: int = _f(0, "Context per evaluation window in tokens; 0 = the model's max_seq_len.")
    batch_size: int = _f(8, "Windows per forward pass.")
    max_tokens: int = _f(
        1_000_000, "Score at most this many target tokens of the val split (0 = all of it)."
    )
    device: str = _f("auto", "auto (cuda when available, else cpu) | cpu | cuda.")
    prompts: list = _f(
        ["The ", "Once upon a time", "In 1905,"], "Fixed prompts for generation samples."
    )
    sample_tokens: int = _f(48, "Tokens generated per prompt.")
    temperature: float = _f(0.8, "Sampling temperature for samples (0 = greedy).")
    top_k: int = _f(50, "Sample among the k most likely tokens (0 = off).")
    seed: int = _f(1337, "Seed of the sampling generator, so samples are reproducible.")
    max_val_loss: float = _f(0.0, "Gate: fail when val loss (nats/token) exceeds this (0 = off).")
    max_bits_per_byte: float = _f(0.0, "Gate: fail when bits per byte exceed this (0 = off).")
    baseline_margin: float = _f(
        0.0,
        "Gate, with a baseline: the val loss must be at least this much (nats) below the baseline's; negative tolerates a small regression.",
    )


@dataclass
class PublishConfig:
    """Upload a trained model to S3, track it in MLflow, register a version (`kiln publish`)."""

    model_name: str = _f("kiln-llama", "Registered model name that versions are created under.")
    upload_checkpoints: str = _f(
        "none",
        "Checkpoint files to upload besides their index: none | latest | all (weights + optimizer state: big).",
    )
    promote: bool = _f(
        True, "Move `champion` when the eval gate passed and the registry gate agrees."
    )
    description: str = _f("", "Text for the registered version (default: a generated summary).")
    serving_name: str = _f(
        "", "InferenceService name; '' = derived from the model name and version."
    )
    serving_namespace: str = _f("", "InferenceService namespace; '' = the current one.")
    serving_gpus: int = _f(1, "GPUs per serving replica (vLLM).")
    serving_cpu: str = _f("4", "CPU request/limit per serving replica.")
    serving_memory: str = _f("16Gi", "Memory request/limit per serving replica.")


@dataclass
class Config:
    """Everything a Kiln run needs, one section per concern."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------- presets
def _tiny(c: Config) -> None:
    """CPU, seconds per run: for tests and laptops."""
    c.model.dim, c.model.n_layers, c.model.n_heads, c.model.n_kv_heads = 64, 2, 4, 2
    c.model.max_seq_len = 128
    c.data.seq_len = 64
    c.train.max_steps, c.train.micro_batch_size = 200, 8
    c.train.log_every, c.train.eval_every, c.train.eval_batches = 10, 100, 4
    c.train.ckpt_every = 100
    c.train.sample_tokens = 32
    c.optim.lr, c.optim.warmup_steps = 3e-3, 20


def _small(c: Config) -> None:
    """~25M parameters: a laptop CPU or one small GPU."""
    c.model.dim, c.model.n_layers, c.model.n_heads, c.model.n_kv_heads = 384, 6, 6, 2
    c.model.max_seq_len = 512
    c.data.seq_len = 512
    c.train.max_steps, c.train.micro_batch_size = 5000, 16
    c.optim.lr, c.optim.warmup_steps = 1e-3, 200


def _gpt2_124m(c: Config) -> None:
    """GPT-2 small sized LLaMA (12 × 768, 12 heads, 1024 context, tied embeddings, 50257 vocab)."""
    c.model.vocab_size = 50304  # GPT-2's 50257 padded to a multiple of 64 for fast matmuls
    c.model.dim, c.model.n_layers, c.model.n_heads, c.model.n_kv_heads = 768, 12, 12, 12
    c.model.ffn_dim = 2048  # 8/3·768: the same MLP parameter count as GPT-2's 4·768 GELU MLP
    c.model.max_seq_len = 1024
    c.model.tie_embeddings = True
    c.data.seq_len = 1024
    c.train.micro_batch_size, c.train.tokens_per_step = 16, 524288
    c.train.max_steps, c.train.dtype, c.train.compile = 19073, "bf16", True
    c.optim.lr, c.optim.warmup_steps = 6e-4, 715


def _1b(c: Config) -> None:
    """~1.1B parameters (TinyLlama shape): multi-GPU, FSDP."""
    c.model.vocab_size = 32000
    c.model.dim, c.model.n_layers, c.model.n_heads, c.model.n_kv_heads = 2048, 22, 32, 4
    c.model.ffn_dim = 5632
    c.model.max_seq_len = 2048
    c.data.seq_len = 2048
    c.train.micro_batch_size, c.train.tokens_per_step = 8, 2097152
    c.train.max_steps, c.train.dtype, c.train.compile = 50000, "bf16", True
    c.dist.strategy, c.dist.use_gpu = "fsdp", True
    c.optim.lr, c.optim.warmup_steps = 4e-4, 2000


PRESETS = {"tiny": _tiny, "small": _small, "gpt2-124m": _gpt2_124m, "1b": _1b}


def preset(name: str) -> Config:
    """The named preset as a fresh Config."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = Config()
    PRESETS[name](cfg)
    return cfg


# ------------------------------------------------------------------------- merging and overrides
def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert a file value or an override string to the field's declared type."""
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on"}:
            return True
        if isinstance(value, str) and value.lower() in {"false", "0", "no", "off"}:
            return False
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if typ in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected {typ.__name__}, got {value!r}")
        try:
            num = (
                typ(value)
                if not isinstance(value, str)
                else typ(float(value) if typ is float else int(value))
            )
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {typ.__name__}, got {value!r}") from None
        return num
    if typ is str:
        return str(value)
    if typ is list or origin is list:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return value
    if typ is dict or origin is dict:
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return value
    if isinstance(typ, types.UnionType):
        return value
    return value


def _field_types(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def merge(obj: Any, data: dict[str, Any], where: str = "") -> None:
    """Merge a nested mapping into a dataclass tree in place; unknown keys are an error."""
    types_ = _field_types(obj)
    for key, value in data.items():
        path = f"{where}{key}"
        if key not in types_:
            raise ValueError(f"unknown config key {path!r}; valid keys here: {', '.join(types_)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{path}: expected a section (mapping), got {value!r}")
            merge(current, value, f"{path}.")
        else:
            setattr(obj, key, _coerce(value, types_[key], path))


def apply_override(cfg: Config, item: str) -> None:
    """Apply one `section.key=value` override."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.key=value")
    dotted, value = item.split("=", 1)
    *sections, key = dotted.strip().split(".")
    nested: dict[str, Any] = {key: value}
    for section in reversed(sections):
        nested = {section: nested}
    merge(cfg, nested)


def read_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file into a mapping."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix in {".yaml", ".yml"}:
        import yaml

        return yaml.safe_load(text) or {}
    if path.suffix == ".json":
        return json.loads(text)
    raise ValueError(f"{path}: config files must be .toml, .yaml/.yml or .json")


def load_config(
    preset_name: str | None = None,
    file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Preset, then file, then overrides (later wins).

    The preset is `preset_name`, else the file's top-level `preset` key, else "tiny".
    """
    data = read_file(file) if file else {}
    file_preset = data.pop("preset", None)
    cfg = preset(preset_name or file_preset or "tiny")
    merge(cfg, data)
    for item in overrides or []:
        apply_override(cfg, item)
    validate(cfg)
    return cfg


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config saved with `to_dict` (e.g. from a checkpoint)."""
    cfg = Config()
    merge(cfg, data)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks with messages a user can act on."""
    m = cfg.model
    if m.dim % m.n_heads:
        raise ValueError(f"model.dim={m.dim} must be divisible by model.n_heads={m.n_heads}")
    if m.n_heads % m.n_kv_heads:
        raise ValueError(
            f"model.n_heads={m.n_heads} must be a multiple of model.n_kv_heads={m.n_kv_heads}"
        )
    if (m.dim // m.n_heads) % 2:
        raise ValueError("head dim (model.dim / model.n_heads) must be even for RoPE")
    if cfg.data.seq_len > m.max_seq_len:
        raise ValueError(
            f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len={m.max_seq_len}"
        )
    if cfg.optim.schedule not in {"cosine", "constant", "wsd"}:
        raise ValueError(
            f"optim.schedule must be cosine, constant or wsd, got {cfg.optim.schedule!r}"
        )
    if cfg.train.dtype not in {"auto", "bf16", "fp32"}:
        raise ValueError(f"train.dtype must be auto, bf16 or fp32, got {cfg.train.dtype!r}")
    if cfg.dist.strategy not in {"ddp", "fsdp"}:
        raise ValueError(f"dist.strategy must be ddp or fsdp, got {cfg.dist.strategy!r}")
    if cfg.dist.workers < 0 or cfg.dist.cpus_per_worker < 0:
        raise ValueError("dist.workers and dist.cpus_per_worker must be >= 0")
    if cfg.train.max_steps < 1 or cfg.train.micro_batch_size < 1:
        raise ValueError("train.max_steps and train.micro_batch_size must be >= 1")
    if cfg.tracking.backend not in {"mlflow", "file", "none"}:
        raise ValueError(
            f"tracking.backend must be mlflow, file or none, got {cfg.tracking.backend!r}"
        )
    if cfg.storage.part_size_mb < 5 or cfg.storage.retries < 1:
        raise ValueError("storage.part_size_mb must be >= 5 (S3 minimum) and storage.retries >= 1")


def describe_fields(obj: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every field: the reference shown by the CLI."""
    obj = obj if obj is not None else Config()
    rows = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe_fields(value, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", value, f.metadata.get("help", "")))
    return rows
