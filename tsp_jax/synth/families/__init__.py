"""The task families, one module per CWE; `FAMILIES` lists them in a fixed order (the generator's draw order)."""

from tsp_jax.synth.families import sql_injection

FAMILIES = (
    sql_injection.FAMILY,
)
