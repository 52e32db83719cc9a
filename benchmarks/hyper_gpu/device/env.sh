export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false HYPERPRAG_CACHE=$PWD/.gpu/cache
export PYTHONPATH=$PWD/.gpu/shim:/tmp/site:$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PY:-python3}
if [ ! -f /tmp/site/.done ]; then $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && touch /tmp/site/.done || exit 1; fi
[ -d .gpu/data ] && mkdir -p ../shared/data && for f in .gpu/data/*.gz; do [ -f ../shared/data/$(basename $f .gz) ] || gunzip -c $f > ../shared/data/$(basename $f .gz); done
true
