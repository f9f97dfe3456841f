"""Hook implementations of velollm-llamacpp."""

from __future__ import annotations

from velollm_core.api import hookimpl


@hookimpl
def register_backends(register):
    from velollm_llamacpp.backend import LlamaCppBackend

    register(LlamaCppBackend())


@hookimpl
def register_commands(cli):
    from velollm_llamacpp.commands import llamacpp_group
    from velollm_llamacpp.estimate_command import estimate_command

    cli.add_command(llamacpp_group)
    cli.add_command(estimate_command)


@hookimpl
def resolve_model(name):
    """The bundled test models (gemma3-270m, smollm2-135m) and those derived from them."""
    from velollm_llamacpp.derived import DERIVED, make_derived
    from velollm_llamacpp.testmodels import TEST_MODELS

    if name in TEST_MODELS:
        return TEST_MODELS[name]()
    return make_derived(name) if name in DERIVED else None


@hookimpl
def local_models():
    from velollm_llamacpp.derived import DERIVED, derived_path
    from velollm_llamacpp.testmodels import installed_test_models

    paths = {name: derived_path(name) for name in DERIVED}
    derived = [{"name": n, "path": str(p), "size_bytes": p.stat().st_size} for n, p in paths.items() if p.is_file()]
    return [*installed_test_models(), *derived]


@hookimpl
def propose_config(hardware, model, backend, concurrency):
    """The llama.cpp proposal, sized for ``concurrency`` slots; the tuning rules are imported only when
    asked (every command loads this module, `velollm detect --json` too). verify_config and tune_for_load
    are the backend object's (backend.py)."""
    from velollm_llamacpp import tune

    return tune.propose_config(hardware=hardware, model=model, backend=backend, concurrency=concurrency)


@hookimpl
def register_report_formats(register):
    """llama-bench's own formats: its -o md table, and the -o json / jsonl / sql rows compare-llama-bench.py reads."""
    from velollm_core.api import ReportFormat

    def rendered(name: str):
        def render(sources):
            from velollm_llamacpp import llama_bench

            return getattr(llama_bench, name)(sources)

        return render

    register(ReportFormat("llama-bench", rendered("markdown_report"), marker=b"| model ",
                          description="llama-bench's markdown table (pp/tg workloads)"))
    register(ReportFormat("llama-bench-json", rendered("json_report"), marker=b'[\n  {\n    "build_commit"',
                          description="llama-bench -o json rows, for compare-llama-bench.py"))
    register(ReportFormat("llama-bench-jsonl", rendered("jsonl_report"), marker=b'{"build_commit"',
                          description="llama-bench -o jsonl rows, for compare-llama-bench.py"))
    register(ReportFormat("llama-bench-sql", rendered("sql_report"), marker=b"CREATE TABLE IF NOT EXISTS llama_bench",
                          description="llama-bench -o sql statements, for sqlite3 and compare-llama-bench.py"))


@hookimpl
def register_result_importers(register):
    """llama-bench's JSON, JSONL, SQL and SQLite output, for `velollm history import`."""
    from velollm_core.api import ResultImporter

    def sniff(path, head):
        from velollm_llamacpp import llama_bench

        return llama_bench.sniff(path, head)

    def load(path):
        from velollm_llamacpp import llama_bench

        return llama_bench.load(path)

    register(ResultImporter("llama-bench", sniff, load, description="llama-bench -o json|jsonl|sql, or its SQLite"))
