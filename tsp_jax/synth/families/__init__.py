"""The task families, one module per CWE; `FAMILIES` lists them in a fixed order (the generator's draw order)."""

from tsp_jax.synth.families import (code_injection, command_injection, deserialization, insecure_random,
                                    insecure_tempfile, jwt_verification, log_injection, open_redirect, path_traversal,
                                    permissions, regex_injection, sql_injection, template_injection, weak_hash, xss,
                                    xxe)

FAMILIES = (
    sql_injection.FAMILY,
    command_injection.FAMILY,
    path_traversal.FAMILY,
    deserialization.FAMILY,
    xss.FAMILY,
    template_injection.FAMILY,
    code_injection.FAMILY,
    open_redirect.FAMILY,
    xxe.FAMILY,
    log_injection.FAMILY,
    permissions.FAMILY,
    regex_injection.FAMILY,
    weak_hash.FAMILY,
    insecure_random.FAMILY,
    insecure_tempfile.FAMILY,
    jwt_verification.FAMILY,
)
