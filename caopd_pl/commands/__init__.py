"""Sub-commands of ``python -m caopd_pl`` besides training: ``verify``, ``report`` and ``verifiers``.

Each module exposes ``main(argv: list[str] | None) -> int`` (argparse; exit status 0 on success).
"""
