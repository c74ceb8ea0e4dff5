"""A small world of generated secure-coding tasks: families (one per CWE) of templates with secure and vulnerable
idioms and executable tests (`python -m tsp_jax.synth --out=DIR --seed=S`)."""
