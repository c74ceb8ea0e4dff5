"""Evaluation harness: benchmarks, one completion per prompt, verifier-pool scoring, the node probe, reports."""

from tsp_jax.evaluation.benchmarks import BENCHMARKS, REFERENCE_KINDS, load_benchmarks
from tsp_jax.evaluation.decoding import Decoding, load_model
from tsp_jax.evaluation.probe import node_probe
from tsp_jax.evaluation.report import compare_table, family_table, markdown_table, plot_per_cwe, read_json, write_json
from tsp_jax.evaluation.runs import evaluate_checkpoint, evaluate_model, evaluate_reference

__all__ = ["BENCHMARKS", "REFERENCE_KINDS", "load_benchmarks", "Decoding", "load_model", "node_probe", "compare_table",
           "family_table", "markdown_table", "plot_per_cwe", "read_json", "write_json", "evaluate_checkpoint",
           "evaluate_model", "evaluate_reference"]
