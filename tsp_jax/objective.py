"""Training objectives: the node-level TSP loss, sequence-level DPO (self-play baseline) and SFT.

All losses are pure functions `(params, cfg, batch, ref_logps, loss_cfg) -> (loss, metrics)`, jittable, with the
reference log-probs computed outside the gradient (`reference_logps`, once per round).

A preference pair holds two token sequences that share a prefix (prompt + golden code up to the decision node);
the masks select the tokens that carry signal, i.e. those after the node (TSP) or after the prompt (sequence-level
DPO). With masked sums S(x) = sum_t w_t m_t log pi(x_t | x_<t):

    margin = beta * [(S_pi(chosen) - S_ref(chosen)) - (S_pi(rejected) - S_ref(rejected))]
    loss   = sum_pairs weight * softplus(-margin) / sum weight  +  alpha * NLL_per_token(chosen)

w_t is 1, or `first_token_weight` on the first `first_tokens` scored tokens of each sequence (the divergent
tokens at the node).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from tsp_jax.model import llama, sharding

LOSSES = ("tsp", "dpo", "sft")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Static loss settings."""
  name: str = "tsp"  # tsp | dpo | sft
  beta: float = 0.1
  sft_weight: float = 0.0  # alpha: SFT term on the chosen tokens (tsp and dpo)
  first_token_weight: float = 1.0  # weight of the first scored tokens of each sequence (tsp only)
  first_tokens: int = 1

  def __post_init__(self):
    if self.name not in LOSSES:
      raise ValueError(f"unknown loss {self.name!r}; expected one of {LOSSES}")
    if self.beta <= 0 or self.sft_weight < 0 or self.first_token_weight <= 0 or self.first_tokens < 0:
      raise ValueError(f"bad loss settings: {self}")


@flax.struct.dataclass
class PairBatch:
  """A batch of B preference pairs, right-padded to L tokens.

  mask[b, t] = 1 where token t is scored (predicted from tokens < t); always 0 at t = 0 and on padding.
  """
  chosen: jax.Array  # [B, L] int32
  rejected: jax.Array  # [B, L] int32
  chosen_mask: jax.Array  # [B, L] float32
  rejected_mask: jax.Array  # [B, L] float32
  weight: jax.Array  # [B] float32; 0 for padding pairs


@flax.struct.dataclass
class SeqBatch:
  """A batch of B rows for SFT: tokens [B, L] int32 and mask [B, L] float32 (scored tokens).

  Packed rows (`pairs.packed_sequence_set`) hold several sequences each: segments [B, L] int32 (1, 2, ... per
  sequence, 0 on padding) and positions [B, L] int32 (from 0 in each sequence); None: one sequence per row.
  """
  tokens: jax.Array
  mask: jax.Array
  segments: jax.Array | None = None
  positions: jax.Array | None = None


@flax.struct.dataclass
class PackedPairBatch:
  """Pairs packed into B rows of L tokens with M pair slots per row (`packing.PackedPairs`): each row holds node
  prefixes once and their continuations (tree attention); masks place each slot's chosen / rejected tokens."""
  tokens: jax.Array  # [B, L] int32
  positions: jax.Array  # [B, L] int32 (-1: padding)
  ids: jax.Array  # [B, L] int32 segment ids (llama.Segments)
  root: jax.Array  # [B, L] int32
  pred: jax.Array  # [B, L] int32: the column whose logits predict each token (-1: none)
  chosen_mask: jax.Array  # [B, M, L] float32
  rejected_mask: jax.Array  # [B, M, L] float32
  weight: jax.Array  # [B, M] float32; 0 for empty slots
  prefix_len: int = flax.struct.field(pytree_node=False, default=0)  # tree layout (llama.Segments); 0: flat rows
  chunk_len: int = flax.struct.field(pytree_node=False, default=0)


def token_logps(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log p(tokens[t] | tokens[<t]) from next-token logits. logits [B, L, V], tokens [B, L] -> [B, L] (0 at t=0).

  The target's logit minus the log-normalizer: no [B, L, V] log-softmax is written (a pre-training step on CPU
  0.41 s against 0.46 s with one)."""
  logits = logits[:, :-1].astype(jnp.float32)  # [B, L-1, V]
  picked = jnp.take_along_axis(logits, tokens[:, 1:, None], axis=-1)[..., 0] - jax.nn.logsumexp(logits, axis=-1)
  return jnp.pad(picked, ((0, 0), (1, 0)))  # [B, L]


def position_weights(mask: jax.Array, cfg: LossConfig) -> jax.Array:
  """Per-token weights: mask, with the first `first_tokens` scored tokens scaled. [B, L] -> [B, L]."""
  if cfg.name != "tsp" or cfg.first_token_weight == 1.0 or cfg.first_tokens == 0:
    return mask
  rank = jnp.cumsum(mask, axis=-1)  # 1 for the first scored token
  return mask * jnp.where(rank <= cfg.first_tokens, cfg.first_token_weight, 1.0)


def sequence_logps(params: llama.Params, cfg: llama.LlamaConfig, tokens: jax.Array, weights: jax.Array,
                   rules: sharding.Rules | None = None, segments: jax.Array | None = None,
                   positions: jax.Array | None = None) -> jax.Array:
  """Weighted sums of token log-probs per row. tokens, weights: [B, L] -> [B] float32.

  rules: logical-axis rules for the forward's activation sharding constraints (under `jax.set_mesh`).
  segments, positions: [B, L] of packed rows (`SeqBatch`); None: one sequence per row, positions 0..L-1.
  """
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
  logits, _ = llama.forward(params, cfg, tokens, positions, rules=rules,
                            segments=None if segments is None else llama.Segments.documents(segments))
  return jnp.sum(token_logps(logits, tokens) * weights, axis=-1)


def pair_logps(params: llama.Params, cfg: llama.LlamaConfig, batch: PairBatch | PackedPairBatch,
               loss_cfg: LossConfig, rules: sharding.Rules | None = None) -> tuple[jax.Array, jax.Array]:
  """Weighted log-probs of the chosen and rejected sequences, one forward over both. -> ([B], [B]), or
  ([B * M], [B * M]) per slot of a packed batch."""
  if isinstance(batch, PackedPairBatch):
    return _slot_sums(packed_token_logps(params, cfg, batch, rules), batch, loss_cfg)
  b = batch.chosen.shape[0]
  tokens = jnp.concatenate([batch.chosen, batch.rejected])  # [2B, L]
  weights = position_weights(jnp.concatenate([batch.chosen_mask, batch.rejected_mask]), loss_cfg)
  logps = sequence_logps(params, cfg, tokens, weights, rules)
  return logps[:b], logps[b:]


def packed_token_logps(params: llama.Params, cfg: llama.LlamaConfig, batch: PackedPairBatch,
                       rules: sharding.Rules | None = None) -> jax.Array:
  """log p(token | its sequence before it) of every column of packed rows, one forward. -> [B, L] (0 where
  nothing predicts the token). Only each column's log-normalizer and one target logit are gathered (no [B, L, V]
  log-softmax)."""
  logits, _ = llama.forward(params, cfg, batch.tokens, batch.positions, rules=rules,
                            segments=llama.Segments(ids=batch.ids, root=batch.root, prefix_len=batch.prefix_len,
                                                    chunk_len=batch.chunk_len))  # [B, L, V]
  b, length, v = logits.shape
  src = jnp.maximum(batch.pred, 0)  # [B, L]
  target = jnp.take_along_axis(logits.reshape(b, length * v), src * v + batch.tokens, axis=1)  # [B, L]
  lse = jax.nn.logsumexp(logits, axis=-1)  # [B, L]
  return jnp.where(batch.pred >= 0, target - jnp.take_along_axis(lse, src, axis=1), 0.0)


def _slot_sums(tok_logps: jax.Array, batch: PackedPairBatch, loss_cfg: LossConfig) -> tuple[jax.Array, jax.Array]:
  """Weighted log-prob sums of each slot's chosen and rejected side. tok_logps [B, L] -> ([B * M], [B * M])."""
  b, m, length = batch.chosen_mask.shape
  sums = []
  for mask in (batch.chosen_mask, batch.rejected_mask):
    w = position_weights(mask.reshape(b * m, length), loss_cfg).reshape(b, m, length)
    sums.append(jnp.einsum("bl,bml->bm", tok_logps, w).reshape(-1))
  return sums[0], sums[1]


def reference_logps(ref_params: llama.Params, cfg: llama.LlamaConfig, batch: PairBatch | PackedPairBatch,
                    loss_cfg: LossConfig) -> jax.Array:
  """Reference-model log-probs of a pair batch, [B, 2] (chosen, rejected), or [B, M, 2] for a packed batch;
  computed once, outside the grad."""
  chosen, rejected = pair_logps(ref_params, cfg, batch, loss_cfg)
  return jax.lax.stop_gradient(jnp.stack([chosen, rejected], axis=-1).reshape(*batch.weight.shape, 2))


def preference_terms(pi_chosen: jax.Array, pi_rejected: jax.Array, ref_logps: jax.Array, weight: jax.Array,
                     beta: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The DPO loss from sequence log-probs [B] and reference log-probs [B, 2]; weighted mean over pairs."""
  chosen_reward = beta * (pi_chosen - ref_logps[:, 0])  # [B]
  rejected_reward = beta * (pi_rejected - ref_logps[:, 1])
  margin = chosen_reward - rejected_reward
  total = jnp.maximum(jnp.sum(weight), 1e-9)
  mean = lambda x: jnp.sum(weight * x) / total
  loss = mean(jax.nn.softplus(-margin))
  metrics = {"dpo_loss": loss, "reward_accuracy": mean((margin > 0).astype(jnp.float32)), "margin": mean(margin),
             "chosen_reward": mean(chosen_reward), "rejected_reward": mean(rejected_reward)}
  return loss, metrics


def tsp_loss(params: llama.Params, cfg: llama.LlamaConfig, batch: PairBatch | PackedPairBatch, ref_logps: jax.Array,
             loss_cfg: LossConfig, rules: sharding.Rules | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Node-level DPO (masks select the tokens after the decision node) + optional SFT on the chosen tokens.

  A `PackedPairBatch` (ref_logps [B, M, 2]) gives the same values as the dense batch of its pairs from one
  forward over the packed rows; the SFT term reuses that forward's chosen log-probs.
  """
  sft_term = loss_cfg.name != "sft" and loss_cfg.sft_weight > 0
  if isinstance(batch, PackedPairBatch):
    tok = packed_token_logps(params, cfg, batch, rules)  # [B, L]
    pi_chosen, pi_rejected = _slot_sums(tok, batch, loss_cfg)  # [N = B * M]
    weight, ref_logps = batch.weight.reshape(-1), ref_logps.reshape(-1, 2)
    chosen_counts = jnp.sum(batch.chosen_mask, axis=-1).reshape(-1)
    rejected_counts = jnp.sum(batch.rejected_mask, axis=-1).reshape(-1)
    chosen_logps = (lambda: jnp.einsum("bl,bml->bm", tok, batch.chosen_mask).reshape(-1)) if sft_term else None
  else:
    pi_chosen, pi_rejected = pair_logps(params, cfg, batch, loss_cfg, rules)  # [N = B]
    weight = batch.weight
    chosen_counts, rejected_counts = jnp.sum(batch.chosen_mask, -1), jnp.sum(batch.rejected_mask, -1)
    chosen_logps = (lambda: sequence_logps(params, cfg, batch.chosen, batch.chosen_mask, rules)) if sft_term else None
  loss, metrics = preference_terms(pi_chosen, pi_rejected, ref_logps, weight, loss_cfg.beta)
  n_tokens = jnp.maximum(jnp.sum(weight * chosen_counts), 1.0)
  if sft_term:
    # Unweighted NLL of the chosen tokens (position weights apply to the preference term only).
    sft = -jnp.sum(weight * chosen_logps()) / n_tokens
    loss = loss + loss_cfg.sft_weight * sft
    metrics["sft_loss"] = sft
  # KL(pi || ref) estimated on the sampled pairs, per scored token (chosen and rejected).
  all_tokens = n_tokens + jnp.maximum(jnp.sum(weight * rejected_counts), 1.0)
  metrics["kl_per_token"] = jnp.sum(weight * (pi_chosen - ref_logps[:, 0] + pi_rejected - ref_logps[:, 1])
                                    ) / all_tokens
  metrics["loss"] = loss
  return loss, metrics


def dpo_loss(params: llama.Params, cfg: llama.LlamaConfig, batch: PairBatch | PackedPairBatch, ref_logps: jax.Array,
             loss_cfg: LossConfig, rules: sharding.Rules | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Sequence-level DPO (the unstructured self-play baseline): masks cover the whole completion."""
  return tsp_loss(params, cfg, batch, ref_logps, dataclasses.replace(loss_cfg, name="dpo"), rules)


def sft_loss(params: llama.Params, cfg: llama.LlamaConfig, batch: SeqBatch, ref_logps: jax.Array | None = None,
             loss_cfg: LossConfig | None = None, rules: sharding.Rules | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean negative log-likelihood per scored token (ref_logps and loss_cfg are unused)."""
  del ref_logps, loss_cfg
  nll = -jnp.sum(sequence_logps(params, cfg, batch.tokens, batch.mask, rules, batch.segments, batch.positions))
  loss = nll / jnp.maximum(jnp.sum(batch.mask), 1.0)
  return loss, {"loss": loss, "sft_loss": loss}


def loss_fn(name: str):
  """The loss function of a name in LOSSES."""
  return {"tsp": tsp_loss, "dpo": dpo_loss, "sft": sft_loss}[LossConfig(name=name).name]
