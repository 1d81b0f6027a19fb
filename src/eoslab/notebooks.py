"""``python -m eoslab.notebooks NOTEBOOK OUTPUT [papermill options]``: papermill's command line, started faster.

The DAG's figure jobs execute notebooks through this entry point instead of ``python -m papermill``. Same options,
same behaviour; the only difference is that jsonschema (imported by papermill through nbformat) loads without
``rfc3987_syntax``, whose grammar build is 1.9 of papermill's 2.7 CPU seconds of import
(:func:`eoslab.config.import_jsonschema`). Notebook validation never checks the ``iri`` formats it serves.
"""

from eoslab.config import import_jsonschema


def main() -> None:
    import_jsonschema()
    from papermill.cli import papermill

    papermill(prog_name="papermill")


if __name__ == "__main__":
    main()
