"""The training loop: one function for a plain process and for every Ray Train worker.

    result = pretrain(cfg, tokens_dir="tokens/", output_dir="out/")            # one process
    # under Ray Train the same call runs on each worker with a RayRuntime (see ray_launch.py)

What differs between the two lives in a `Runtime` (rank, device, where checkpoints go and come
from); parallelism (DDP or FSDP2) is applied from outside the model when a process group exists
(placement.py).
Each optimizer step: `accum` micro-batches → reduced loss → guarded clip + AdamW (or Muon + AdamW)
step (NaN/inf steps are skipped) → progress/metrics → periodic validation, samples and checkpoints. Rank 0 appends
the step's record to `train_log.jsonl` (see train_log.py), cut back to the resume point first.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import math
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from kiln.components.common.config import Config, ModelConfig, OptimConfig
from kiln.components.pretrain import checkpoint as ckpt
from kiln.components.pretrain.data import IGNORE, TokenLoader
from kiln.components.pretrain.model import Llama
from kiln.components.pretrain.optim import (
    build_optimizers,
    guarded_step,
    lr_at,
    set_lr,
    wsd_decay_start,
)
from kiln.components.pretrain.placement import (
    local_tokens,
    model_shape,
    parallelize,
)
from kiln.components.pretrain.runtime import NonFiniteError, Runtime, Tracker, TrainResult
from kiln.components.pretrain.throughput import ProgressLine, mfu, peak_flops, progress_text
from kiln.components.pretrain.train_log import TRAIN_LOG, append_record, step_metrics, truncate
from kiln.components.tokenization.manifest import read_manifest, shard_paths, verify_shards
from kiln.components.tokenization.shards import ShardError

log = logging.getLogger("kiln.train")

# Past ~16 passes over the same tokens further steps buy almost nothing and held-out loss can
# rise (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models": repeats are worth
# about as much as new tokens up to ~4 epochs, then decay with a half-life of ~15).
MANY_PASSES = 16


def warn_if_repeating(run_tokens: int, train_tokens: int) -> None:
    """Warn when a run would read its training split more than MANY_PASSES times."""
    passes = run_tokens / max(1, train_tokens)
    if passes > MANY_PASSES:
        log.warning(
            "this run reads its %s training tokens %.0f times (%s tokens in all); past ~%d "
            "passes more steps teach little and held-out loss can rise: give it more text, a "
            "smaller preset or fewer train.max_steps",
            f"{train_tokens:,}",
            passes,
            f"{run_tokens:,}",
            MANY_PASSES,
        )


class Validation(NamedTuple):
    """One periodic validation pass."""

    loss: float  # mean cross-entropy, nats/token
    bits_per_byte: float | None  # None when the tokens directory has no tokenizer.json


class Trainer:
    def __init__(
        self, cfg: Config, tokens_dir: str | Path, runtime: Runtime, tracker: Tracker | None = None
    ):
        self.cfg, self.runtime, self.tracker = cfg, runtime, tracker
        tokens_dir = self.tokens_dir = local_tokens(tokens_dir, runtime)
        self.device = runtime.device
        self.rank, self.world = runtime.rank, runtime.world_size
        self.model_cfg = self.build_model_cfg()
        t, d = cfg.train, cfg.data
        per_micro = t.micro_batch_size * d.seq_len * self.world
        if t.tokens_per_step and t.tokens_per_step % per_micro:
            raise ValueError(
                f"train.tokens_per_step={t.tokens_per_step} is not a multiple of micro_batch_size × "
                f"seq_len × workers = {per_micro}"
            )
        self.accum = max(1, t.tokens_per_step // per_micro) if t.tokens_per_step else 1
        self.tokens_per_step = per_micro * self.accum

        torch.manual_seed(t.seed)
        self.model = Llama(self.model_cfg)
        self.model.init_weights(seed=t.seed)  # identical on every rank and device
        self.load_initial_weights()
        self.model.checkpoint_layers = t.activation_checkpointing
        self.model.to(self.device)
        self.fwd = parallelize(self.model, cfg, self.device)
        self.optimizers = build_optimizers(self.model, cfg.optim, self.device)
        self.autocast = self._autocast()

        self.open_data()
        self.max_steps = self.total_steps()
        self.fitted = False  # max_steps fitted to train.time_limit_s (train.fit_to_time_limit)
        self.reserve_s: float | None = None  # seconds the fit keeps for the final save
        self.fit_logged = 0  # the fitted length last logged
        self.eval_times: list[float] = []  # seconds of each validation in this invocation
        self.step, self.skipped, self.nonfinite_run, self.rollbacks = 0, 0, 0, 0
        self.loss_ema: float | None = None
        self.snapshot: dict[str, Any] | None = None
        self.flops_per_token = self.model.flops_per_token(d.seq_len)
        self.peak = peak_flops(self.device.type, self.device.index or 0)  # None on CPU: no MFU

    # ------------------------------------------------------- what fine-tuning changes (sft/train.py)
    def build_model_cfg(self) -> ModelConfig:
        """The model to build: the config's shape, vocabulary sized from the tokenizer."""
        return model_shape(self.cfg.model, self.tokens_dir)

    def load_initial_weights(self) -> None:
        """Start from other weights than the seeded init (pretraining: none)."""

    def open_data(self) -> None:
        """Set `loader` (train batches), `has_val` and `eot_id` from the tokens directory."""
        d, t = self.cfg.data, self.cfg.train
        self.loader = TokenLoader(
            shard_paths(self.tokens_dir, "train"),
            d.seq_len,
            t.micro_batch_size,
            self.rank,
            self.world,
            d.seed,
            d.shuffle,
        )
        manifest = read_manifest(self.tokens_dir)
        self.has_val = bool(manifest.splits.get("val"))
        if self.has_val:  # a damaged val shard fails now, not after the first eval_every steps
            verify_shards(shard_paths(self.tokens_dir, "val"))
        self.eot_id = manifest.eot_id
        if self.rank == 0 and not t.fit_to_time_limit:  # fitted runs size their steps later
            warn_if_repeating(t.max_steps * self.tokens_per_step, self.loader.windows * d.seq_len)

    def total_steps(self) -> int:
        return self.cfg.train.max_steps

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`train.eval_batches` batches of the val split (nothing when it is too small)."""
        d, t = self.cfg.data, self.cfg.train
        try:
            val = TokenLoader(
                shard_paths(self.tokens_dir, "val"),
                d.seq_len,
                t.micro_batch_size,
                self.rank,
                self.world,
                shuffle=False,
            )
        except ShardError:
            raise  # damaged data is an error, never a reason to train on without validation
        except ValueError as e:  # a val split smaller than one batch: train on, unvalidated
            log.warning("skipping validation: %s", e)
            self.has_val = False
            return
        for _ in range(t.eval_batches):
            yield val.next_batch()

    def target_count(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float | None:
        """What one step's summed loss is divided by on this rank; None = every target counts
        (the mean per micro-batch, over the micro-batches)."""
        return None

    def prompt_ids(self, tokenizer, prompt: str) -> tuple[list[int], int | None]:
        """Ids a sample continues, and the id that ends it (None: generate to the length)."""
        return tokenizer.encode(prompt).ids or [self.eot_id], None

    # --------------------------------------------------------------------------- setup helpers
    def _autocast(self):
        dtype = self.cfg.train.dtype
        if dtype == "bf16" or (dtype == "auto" and self.device.type == "cuda"):
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext

    def _all_mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def _agreed(self, value: float, op: dist.ReduceOp.RedOpType) -> float:
        """`value` reduced over the ranks by `op`; with one process, `value` itself (no device
        round trip: the time-limit checks run every step)."""
        if self.world == 1:
            return value
        agreed = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(agreed, op=op)
        return agreed.item()

    def _sync_grads(self, on: bool):
        if isinstance(self.fwd, torch.nn.parallel.DistributedDataParallel) and not on:
            return self.fwd.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
            self.model.set_requires_gradient_sync(on)
        return contextlib.nullcontext()

    def loss(self, x: torch.Tensor, y: torch.Tensor, divisor: float | None = None) -> torch.Tensor:
        """Mean cross-entropy of the batch; with `divisor`, its sum (targets -100 ignored) / divisor."""
        with self.autocast():
            logits = self.fwd(x)
        flat = logits.float().view(-1, logits.shape[-1])
        if divisor is None:
            return F.cross_entropy(flat, y.reshape(-1))
        return F.cross_entropy(flat, y.reshape(-1), ignore_index=IGNORE, reduction="sum") / divisor

    # ------------------------------------------------------------------------------ state I/O
    def state(self) -> tuple[dict, dict]:
        return get_state_dict(
            self.model,
            self.optimizers,
            options=StateDictOptions(full_state_dict=True, cpu_offload=True),
        )

    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "loader": self.loader.state_dict(),
            "skipped_steps": self.skipped,
            "nonfinite_in_a_row": self.nonfinite_run,
            "rollbacks": self.rollbacks,
            "loss_ema": self.loss_ema,
            "tokens_seen": self.step * self.tokens_per_step,
            "world_size": self.world,
            "fitted_max_steps": self.max_steps if self.fitted else None,
        }

    def load(self, directory: Path) -> None:
        parts = ckpt.read_checkpoint(directory, tied=self.model_cfg.tie_embeddings)
        saved = parts["config"].get("model", {})
        ckpt.check_same_model(directory, saved, dataclasses.asdict(self.model_cfg))
        set_state_dict(
            self.model,
            self.optimizers,
            model_state_dict=parts["model"],
            optim_state_dict=parts["optim"],
            options=StateDictOptions(full_state_dict=True),
        )
        s = parts["trainer_state"]
        self.step, self.skipped, self.rollbacks = s["step"], s["skipped_steps"], s["rollbacks"]
        self.nonfinite_run, self.loss_ema = s["nonfinite_in_a_row"], s["loss_ema"]
        self.loader.load_state_dict(s["loader"])
        if s.get("fitted_max_steps"):  # the schedule fitted to a time limit keeps its length
            self.max_steps, self.fitted = s["fitted_max_steps"], True
        if parts["rng"] is not None:
            ckpt.set_rng_state(parts["rng"])
        log.info("resumed from %s at step %d", directory, self.step)

    def save(self, metrics: dict[str, float]) -> None:
        model_state, optim_state = self.state()  # collective under FSDP: every rank calls it
        # The checkpoint records the model it holds (export rebuilds it from this config).
        config = {**self.cfg.to_dict(), "model": dataclasses.asdict(self.model_cfg)}
        trainer_state = self.trainer_state()
        tied = self.model_cfg.tie_embeddings

        log_file = Path(self.runtime.output_dir) / TRAIN_LOG

        def writer(directory: Path) -> None:
            ckpt.write_checkpoint(directory, model_state, optim_state, trainer_state, config, tied)
            if log_file.exists():  # the loss history travels with the checkpoint (e.g. to S3)
                shutil.copyfile(log_file, directory / TRAIN_LOG)

        self.runtime.save(self.step, writer, metrics, self.cfg.train.keep_checkpoints)
        if self.cfg.train.spike_factor > 0:  # in-memory copy of this rank's state for rollbacks
            self.snapshot = {
                "model": copy.deepcopy(self.model.state_dict()),
                "optim": [copy.deepcopy(o.state_dict()) for o in self.optimizers],
                "trainer": trainer_state,
            }

    # ------------------------------------------------------------------------- evaluation
    @functools.cached_property
    def token_bytes(self) -> torch.Tensor | None:
        """UTF-8 bytes each token id decodes to (for bits per byte); None without a tokenizer."""
        tok_file = self.tokens_dir / "tokenizer.json"
        if not tok_file.exists():
            return None
        from kiln.components.evaluate.metrics import token_byte_lengths

        lengths = token_byte_lengths(tok_file, self.model_cfg.vocab_size)
        return torch.from_numpy(lengths).to(self.device)

    @torch.no_grad()
    def evaluate(self) -> Validation | None:
        """Loss and bits per byte on `train.eval_batches` batches of the val split (all ranks)."""
        if not self.has_val:
            return None
        lengths = self.token_bytes
        self.model.eval()
        # Σ nats, target tokens, Σ target bytes: summed over batches, then over ranks.
        totals = torch.zeros(3, device=self.device, dtype=torch.float64)
        for x, y in self.val_batches():
            x, y = x.to(self.device), y.to(self.device)
            with self.autocast():
                logits = self.fwd(x)  # (B, T, V)
            nats = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]),
                y.reshape(-1),
                ignore_index=IGNORE,
                reduction="none",
            )  # 0 where the target is ignored
            counted = y != IGNORE
            totals[0] += nats.double().sum()
            totals[1] += counted.sum()
            if lengths is not None:
                totals[2] += (lengths[y.clamp(min=0)] * counted).sum()
        self.model.train()
        if not self.has_val:
            return None
        if self.world > 1:
            dist.all_reduce(totals)
        nats_sum, count, n_bytes = totals.tolist()
        bpb = nats_sum / math.log(2) / n_bytes if lengths is not None and n_bytes else None
        return Validation(nats_sum / count, bpb)

    @torch.no_grad()
    def samples(self) -> list[str]:
        """Generations from the fixed prompts (rank 0, unsharded models only; none when
        train.sample_tokens is 0)."""
        tok_file = self.tokens_dir / "tokenizer.json"
        if (
            self.rank != 0
            or not self.cfg.train.sample_tokens
            or self.cfg.dist.strategy == "fsdp"
            and self.world > 1
            or not tok_file.exists()
        ):
            return []
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tok_file))
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed)
        out = []
        self.model.eval()
        for prompt in self.cfg.train.sample_prompts:
            ids, stop = self.prompt_ids(tokenizer, prompt)
            x = torch.tensor([ids], device=self.device)
            with self.autocast():
                y = self.model.generate(
                    x,
                    self.cfg.train.sample_tokens,
                    temperature=0.8,
                    top_k=50,
                    eos_id=stop,
                    generator=gen,
                )
            if stop is None:
                out.append(tokenizer.decode(y[0].tolist()))
            else:  # a chat model: the question and its answer
                out.append(f"{prompt} → {tokenizer.decode(y[0, len(ids) :].tolist())}")
        self.model.train()
        return out

    # ------------------------------------------------------------------------------ the loop
    def train_step(self) -> tuple[float, float, bool]:
        """One optimizer step over `accum` micro-batches: (mean loss, grad norm, stepped)."""
        set_lr(
            self.optimizers,
            lr_at(self.step, self.max_steps, self.cfg.optim),
            self.cfg.optim,
        )
        total = torch.zeros((), device=self.device)
        batches = [self.loader.next_batch() for _ in range(self.accum)]
        divisor = self.target_count(batches)
        for micro, (x, y) in enumerate(batches):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self._sync_grads(micro == self.accum - 1):
                loss = self.loss(x, y, divisor)
                loss = loss / self.accum if self.accum > 1 and divisor is None else loss
                loss.backward()
            total += loss.detach()
        loss = self._all_mean(total)
        norm, stepped = guarded_step(self.model, self.optimizers, self.cfg.optim.grad_clip, loss)
        return float(loss), norm, stepped

    def _handle_nonfinite(self, stepped: bool) -> None:
        if stepped:
            self.nonfinite_run = 0
            return
        self.skipped += 1
        self.nonfinite_run += 1
        log.warning(
            "step %d: NaN/inf loss or gradient, step skipped (%d in a row)",
            self.step,
            self.nonfinite_run,
        )
        if self.nonfinite_run >= self.cfg.train.max_nonfinite_in_a_row:
            raise NonFiniteError(
                f"{self.nonfinite_run} consecutive steps had NaN/inf loss or gradients (at step {self.step}); "
                "lower optim.lr, check the data, or raise train.max_nonfinite_in_a_row"
            )

    def _spiked(self, loss: float) -> bool:
        """Loss-spike policy: roll back to the last checkpoint, keep the data cursor (skips the window)."""
        factor = self.cfg.train.spike_factor
        if factor <= 0 or not math.isfinite(loss):
            return False
        if (
            self.loss_ema is None
            or self.step <= self.cfg.optim.warmup_steps
            or self.snapshot is None
        ):
            self.loss_ema = loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * loss
            return False
        if loss <= factor * self.loss_ema:
            self.loss_ema = 0.9 * self.loss_ema + 0.1 * loss
            return False
        self.rollbacks += 1
        if self.rollbacks > self.cfg.train.max_rollbacks:
            raise NonFiniteError(
                f"loss spiked {self.rollbacks} times (last {loss:.3f} vs mean {self.loss_ema:.3f}); giving up"
            )
        snap = self.snapshot
        log.warning(
            "step %d: loss %.3f > %.1f × mean %.3f: rolling back to step %d, skipping this data",
            self.step,
            loss,
            factor,
            self.loss_ema,
            snap["trainer"]["step"],
        )
        self.model.load_state_dict(snap["model"])
        for optimizer, state in zip(self.optimizers, snap["optim"], strict=True):
            optimizer.load_state_dict(state)
        self.step = snap["trainer"]["step"]
        self._cut_train_log()
        return True

    def _cut_train_log(self, checkpoint: Path | None = None) -> None:
        """Rank 0: end train_log.jsonl at `self.step` (the resume or rollback point), so that
        steps run again are not logged twice. Without a log here (a fresh pod resuming from S3),
        start from the copy the checkpoint carries."""
        if self.rank != 0:
            return
        path = Path(self.runtime.output_dir) / TRAIN_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() and checkpoint is not None and (checkpoint / TRAIN_LOG).exists():
            shutil.copyfile(checkpoint / TRAIN_LOG, path)
        if dropped := truncate(path, self.step):
            log.info("train log: dropped %d records after step %d", dropped, self.step)

    def _fit_to_deadline(
        self, deadline: float, since: tuple[float, int, float], shrink_only: bool = False
    ) -> None:
        """Set max_steps to the steps that fit before `deadline` at the pace since `since` (a
        perf_counter time, the step and the validation seconds spent by then), validations
        apart; at most the configured length, with `shrink_only` at most the current one.
        Every rank agrees on the smallest."""
        t = self.cfg.train
        t1, step1, eval_s1 = since
        spent = sum(self.eval_times) - eval_s1
        pace = (time.perf_counter() - t1 - spent) / max(1, self.step - step1)
        if self.eval_times:  # the first one warms up: the rest tell the cost, when there are
            eval_s = statistics.fmean(self.eval_times[1:] or self.eval_times)
        else:  # none yet: forward only, a third of a step per batch
            eval_s = t.eval_batches * pace / (3 * self.accum) if self.has_val else 0.0
        if self.reserve_s is None:  # the final save and samples: 3% of the time at the first fit
            self.reserve_s = 0.03 * (deadline - time.time())
        remaining = deadline - time.time() - self.reserve_s
        most = self.max_steps if shrink_only else self.total_steps()
        fits = steps_that_fit(self.step, pace, remaining, eval_s, t.eval_every, most)
        fitted = int(self._agreed(fits, dist.ReduceOp.MIN))
        if self.rank == 0 and abs(fitted - self.fit_logged) >= 0.01 * fitted:  # no step-by-step
            self.fit_logged = fitted
            log.info(
                "train.fit_to_time_limit: %.3f s/step, the schedule ends at step %d",
                pace,
                fitted,
            )
        self.max_steps, self.fitted = fitted, True

    def _out_of_time(self, deadline: float, t0: float, start_step: int) -> bool:
        """Whether one more step, at this invocation's mean pace, would pass `deadline`; every
        rank gets the same answer (rank clocks differ a little, a step is collective)."""
        pace = (time.perf_counter() - t0) / max(1, self.step - start_step)
        return bool(self._agreed(float(time.time() + pace > deadline), dist.ReduceOp.MAX))

    def fit(self) -> TrainResult:
        t = self.cfg.train
        with self.runtime.restore() as directory:
            if directory is not None:
                self.load(Path(directory))
            self._cut_train_log(Path(directory) if directory is not None else None)
        if self.rank == 0:
            log.info(
                "model %.2fM params, %d tokens/step (%d micro-batches × %d seq × %d workers), %d steps, device %s",
                self.model.num_params() / 1e6,
                self.tokens_per_step,
                self.accum,
                self.cfg.data.seq_len,
                self.world,
                self.max_steps,
                self.device,
            )
        train_log = Path(self.runtime.output_dir) / TRAIN_LOG if self.rank == 0 else None
        losses: dict[int, float] = {}
        progress = ProgressLine(self.max_steps, enabled=self.rank == 0)
        start_step, t0 = self.step, time.perf_counter()
        window_t, window_steps = t0, 0
        val_loss, samples, tok_s = None, [], 0.0
        stop = (
            min(self.max_steps, start_step + t.stop_after_steps)
            if t.stop_after_steps
            else self.max_steps
        )
        deadline = process_start() + t.time_limit_s if t.time_limit_s else None
        # The schedule's length is fitted when the pace is known and before it matters: at the end
        # of warmup, which does not depend on max_steps, then again with the pace of every step
        # until then: for wsd where the decay starts (the stable phase does not depend on
        # max_steps either), for cosine halfway (a small step in the lr beats a decay cut short
        # by an early pace that was too hopeful).
        # Between and after the fits, every step shortens the schedule if the pace since the last
        # fit (10 steps or more, else since the start) and the validations so far say it would
        # not end in time (the first fit can only guess what a validation costs).
        fitting = deadline is not None and t.fit_to_time_limit and not self.fitted
        fits_left = 2 if fitting else 0
        fit_at = max(self.cfg.optim.warmup_steps, start_step + 10) if fits_left else None
        shrinking, planned_stop = False, stop
        since = first = (t0, start_step, 0.0)
        while self.step < stop:
            loss, norm, stepped = self.train_step()
            self._handle_nonfinite(stepped)
            if self._spiked(loss):
                continue
            self.step += 1
            window_steps += 1
            losses[self.step] = loss
            if self.step == start_step + 1:  # the first step's warm-up is not the pace
                since = first = (time.perf_counter(), self.step, sum(self.eval_times))
            if fit_at is not None and self.step >= fit_at:
                self._fit_to_deadline(deadline, first)
                fits_left -= 1
                fit_at = (
                    refit_step(self.step, self.max_steps, self.cfg.optim) if fits_left else None
                )
                if fit_at is not None and fit_at <= self.step:  # already where the decay starts
                    fit_at = None
                shrinking, since = True, (time.perf_counter(), self.step, sum(self.eval_times))
            elif shrinking:
                self._fit_to_deadline(
                    deadline, since if self.step - since[1] >= 10 else first, True
                )
            if fitting:
                stop = min(planned_stop, self.max_steps)
                progress.total = self.max_steps
            record: dict[str, Any] = {
                "step": self.step,
                "loss": loss,
                "grad_norm": norm,
                "lr": self.optimizers[-1].param_groups[0]["lr"],  # AdamW's: the schedule
                "skipped": not stepped,
                "skipped_steps": self.skipped,
                "rollbacks": self.rollbacks,
                "time": round(time.time(), 4),  # wall clock at the step's end
            }
            last = self.step == stop
            if deadline is not None and not last and self._out_of_time(deadline, t0, start_step):
                log.info("train.time_limit_s reached: stopping at step %d", self.step)
                last, stop = True, self.step
            log_now = self.step % t.log_every == 0 or last
            if log_now:
                now = time.perf_counter()
                tok_s = window_steps * self.tokens_per_step / (now - window_t)
                record["tokens_per_sec"] = tok_s
                utilization = mfu(tok_s, self.flops_per_token, self.peak, self.world)
                if utilization is not None:
                    record["mfu"] = utilization
                window_t, window_steps = now, 0
                if self.rank == 0:
                    eta = (self.max_steps - self.step) * (now - t0) / max(1, self.step - start_step)
                    line = progress_text(
                        self.step, self.max_steps, loss, record["lr"], norm, tok_s, utilization, eta
                    )
                    progress.update(self.step, line) if progress.live else log.info(line)
            eval_now = (t.eval_every and self.step % t.eval_every == 0) or last
            val = None
            if eval_now:
                eval_t = time.perf_counter()
                val = self.evaluate()
                self.eval_times.append(time.perf_counter() - eval_t)
            if val is not None:
                val_loss = record["val_loss"] = val.loss
                bpb = ""
                if val.bits_per_byte is not None:
                    record["val_bits_per_byte"] = val.bits_per_byte
                    bpb = f", {val.bits_per_byte:.3f} bits/byte"
                if self.rank == 0:
                    ppl = math.exp(min(val.loss, 50))
                    log.info("step %d: val loss %.4f (ppl %.2f%s)", self.step, val.loss, ppl, bpb)
            if train_log:
                append_record(train_log, record)  # before the checkpoint, which copies the log
            if self.tracker and self.rank == 0 and (log_now or val is not None):
                self.tracker.log_metrics(step_metrics(record), self.step)
            if (t.sample_every and self.step % t.sample_every == 0) or last:
                samples = self.samples()
                for s in samples:
                    log.info("sample @%d: %r", self.step, s)
            if self.step % t.ckpt_every == 0 or last:
                self.save(
                    {"loss": loss, **({"val_loss": val_loss} if val_loss is not None else {})}
                )
        progress.close()
        latest = (
            ckpt.latest_checkpoint(self.runtime.checkpoint_root)
            if hasattr(self.runtime, "checkpoint_root")
            else None
        )
        return TrainResult(
            step=self.step,
            losses=losses,
            val_loss=val_loss,
            checkpoint=str(latest) if latest else None,
            samples=samples,
            skipped_steps=self.skipped,
            rollbacks=self.rollbacks,
            tokens_per_second=tok_s,
        )


def steps_that_fit(
    step: int, pace: float, remaining_s: float, eval_s: float, eval_every: int, max_steps: int
) -> int:
    """The last step reachable from `step` in `remaining_s` seconds at `pace` seconds per step,
    with a validation of `eval_s` seconds every `eval_every` steps and one at the end; at most
    `max_steps`, at least `step` (stop now)."""
    per_step = pace + (eval_s / eval_every if eval_every else 0.0)
    more = int((remaining_s - eval_s) / per_step) if per_step > 0 else max_steps
    return max(step, min(max_steps, step + more))


def refit_step(step: int, max_steps: int, cfg: OptimConfig) -> int:
    """Where train.fit_to_time_limit fits the schedule a second time, after a first fit at
    `step`: where wsd's decay starts, else halfway through the rest of the schedule."""
    if cfg.schedule == "wsd":
        return wsd_decay_start(max_steps, cfg) - 1
    return step + (max_steps - step) // 2


def process_start() -> float:
    """When this process started (epoch seconds): the origin of `train.time_limit_s`."""
    import psutil

    return psutil.Process().create_time()


def make_trainer(
    cfg: Config, tokens_dir: str | Path, runtime: Runtime, tracker: Tracker | None = None
) -> Trainer:
    """The trainer for `tokens_dir`: pretraining on token shards, or fine-tuning on rendered
    conversations (a chat tokens directory, see `kiln.components.sft`)."""
    local = local_tokens(tokens_dir, runtime)
    from kiln.components.sft.data import is_chat_tokens

    if is_chat_tokens(local):
        from kiln.components.sft.train import SFTTrainer

        return SFTTrainer(cfg, local, runtime, tracker)
    return Trainer(cfg, local, runtime, tracker)


def pretrain(
    cfg: Config,
    tokens_dir: str | Path,
    output_dir: str | Path,
    resume: bool = False,
    tracker: Tracker | None = None,
) -> TrainResult:
    """Train in this process (no Ray) and return the result; checkpoints go to `output_dir/checkpoints`.

    An output directory that already holds checkpoints is continued only with `resume=True`, so
    an earlier run is never silently overwritten.
    """
    runtime = Runtime(Path(output_dir), resume=resume)
    if not resume and ckpt.latest_checkpoint(runtime.checkpoint_root):
        raise ValueError(
            f"{runtime.checkpoint_root} already holds checkpoints: pass --resume to continue, or use a new --output"
        )
    return make_trainer(cfg, tokens_dir, runtime, tracker).fit()
