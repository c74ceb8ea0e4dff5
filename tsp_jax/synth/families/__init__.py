"""The task families, one module per CWE; `FAMILIES` lists them in a fixed order (the generator's draw order)."""

from tsp_jax.synth.families import log_injection, permissions, regex_injection, sql_injection, xxe

FAMILIES = (
    sql_injection.FAMILY,
    xxe.FAMILY,
    log_injection.FAMILY,
    permissions.FAMILY,
    regex_injection.FAMILY,
)
