"""tsp_jax: Tree-like Self-Play (TSP) for secure code LLMs, in JAX."""
