#!/usr/bin/env bash
# GPU step 0, run HERE (a machine that reaches the package index), never on the GPU machine: fills
# .dev/ (git-ignored) with what the GPU machine lacks and cannot download, so steps 1-4 run there:
#   .dev/hw-wheels/*.whl          the wheels of our dependencies missing from its image (Python 3.12)
#   .dev/llama-src.tar.gz         the llama.cpp tree of the pinned llama-cpp-python sdist (no models/docs/tests)
#   .dev/gpu/smollm2-tokenizer.gguf  SmolLM2's BPE tokenizer alone (no tensors), for the random-weight models
# Then carry `.dev` in every device call (about 15 MB; the device limit is 64 MiB for the whole tree).
# Needs ./scripts/setup first (the venv, the test models). Idempotent: present files are kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/python ] || { echo "run ./scripts/setup first" >&2; exit 1; }
. .venv/bin/activate
mkdir -p .dev/hw-wheels .dev/gpu

# The image has pluggy, click, httpx, psutil, rich, numpy; these it lacks. Same versions as our venv.
missing="pydantic pydantic-core annotated-types typing-inspection platformdirs gguf jsonschema jsonschema-specifications referencing rpds-py attrs"
pins=$(for name in $missing; do python -c "import importlib.metadata as m, sys; print(f'{sys.argv[1]}=={m.version(sys.argv[1])}')" "$name"; done)
if [ -z "$(ls .dev/hw-wheels)" ]; then
  # shellcheck disable=SC2086 - one pin per word
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .dev/hw-wheels $pins
fi
ls .dev/hw-wheels

if [ ! -f .dev/llama-src.tar.gz ]; then
  python - <<'EOF'
import json, tarfile, tempfile
from pathlib import Path
from velollm_llamacpp import install, sdist

with tempfile.TemporaryDirectory() as tmp:
    archive = sdist.download(Path(tmp), log=print, progress=lambda what, pct: None)
    tree = Path(tmp) / "tree"
    install._extract_llama_cpp(archive, tree)
    skip = {"models", "docs", "tests", "benches"}  # not needed by a build without tests (LLAMA_BUILD_TESTS=OFF)
    # The tree says which sdist it was cut from, so GPU results record the commit (install.SOURCE_INFO).
    (tree / install.SOURCE_INFO).write_text(json.dumps(install._source_record(archive), indent=2) + "\n")
    with tarfile.open(".dev/llama-src.tar.gz", "w:gz") as out:
        for child in sorted(tree.iterdir()):
            if child.name not in skip:
                out.add(child, arcname=child.name)
print(f".dev/llama-src.tar.gz: llama.cpp {sdist.LLAMA_CPP_COMMIT[:7]} from {sdist.FILENAME}")
EOF
fi

if [ ! -f .dev/gpu/smollm2-tokenizer.gguf ]; then
  python - <<'EOF'
import gguf
from velollm_llamacpp.testmodels import TEST_MODELS

source = gguf.GGUFReader(TEST_MODELS["smollm2-135m"]())
writer = gguf.GGUFWriter(".dev/gpu/smollm2-tokenizer.gguf", arch="llama")
for name, field in source.fields.items():
    if not name.startswith("tokenizer.") or not field.types:
        continue
    value = field.contents()
    if field.types[0] == gguf.GGUFValueType.ARRAY:
        writer.add_array(name, value)
    else:
        writer.add_key_value(name, value, field.types[0])
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.close()
print(".dev/gpu/smollm2-tokenizer.gguf: tokenizer of", TEST_MODELS["smollm2-135m"]().name)
EOF
fi
du -sh .dev
