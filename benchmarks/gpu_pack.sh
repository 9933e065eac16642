#!/usr/bin/env bash
# Packs what gpu_baselines.sh needs on the device machine into three folders, each small enough to travel in
# one `run` call (64 MiB with the ≈ 20 MB working tree), ≈ 40 MB each: .stash/1 (the wheels and a fifth of the
# GGUF), .stash/2 (two fifths, the test data and the journals), .stash/3 (the last two fifths). The wheels are
# this machine's versions of the dependencies the device lacks (../.library/device/KINDS.md lists what it has).
#
#     bash benchmarks/gpu_pack.sh JOURNALS_20 JOURNALS_200
# (the CPU runs' eval --out folders, of a summary.json: the router's and the full-schema baseline's journals)
#
# Then three calls in a row (the machine stays warm 30 s after each):
#     run(carry=[".stash/1"], command="mkdir -p /root/stash && cp -r .stash/1/. /root/stash/")
#     run(carry=[".stash/2"], command="cp -r .stash/2/. /root/stash/")
#     run(carry=[".stash/3"], command="cp -r .stash/3/. /root/stash/ && bash benchmarks/gpu_baselines.sh 540",
#         timeout_s=600)
# PY=3.11 packs wheels for a dry run here: STASH=.stash/all DEVICE=cpu LIMIT=1 bash benchmarks/gpu_baselines.sh
set -eu
[ $# -eq 2 ] || { echo "usage: $0 JOURNALS_20 JOURNALS_200" >&2; exit 2; }
PY=${PY:-3.12}
DEST=.stash
PACKAGES="transformers tokenizers gguf llguidance orjson pydantic pydantic_core annotated-types typing-inspection
          typing_extensions jsonschema jsonschema-specifications referencing rpds-py rank-bm25 snowballstemmer"
grep -qsx "/.stash/" .git/info/exclude || echo "/.stash/" >> .git/info/exclude
rm -rf "$DEST" && mkdir -p "$DEST"/1/whl "$DEST"/2 "$DEST"/3 "$DEST"/all/whl "$DEST"/journals/bl{20,200}

pins=$(python3 -c "import importlib.metadata as m, sys; print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" \
    $PACKAGES)
platforms=""
for n in 17 24 27 28 31 34 35; do platforms="$platforms --platform manylinux_2_${n}_x86_64"; done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp $platforms \
    --platform manylinux2014_x86_64 --platform any -d "$DEST/1/whl" $pins

gguf=$(python3 -c "from toolformer_router.backbone import default_gguf_path; print(default_gguf_path())")
sha256sum "$gguf" | cut -d" " -f1 > "$DEST/1/gguf.sha256"  # gpu_setup.sh checks the parts it joins
split -n 5 -d "$gguf" "$DEST/gguf.part-"  # ≈ 20 MB each: part 1 takes one beside the wheels, parts 2 and 3 two
mv "$DEST"/gguf.part-00 "$DEST/1/"; mv "$DEST"/gguf.part-0[12] "$DEST/2/"; mv "$DEST"/gguf.part-0[34] "$DEST/3/"

tar -cJf "$DEST/2/data.tar.xz" -C data prepared_synthetic/test.jsonl prepared_synthetic/catalog_test.jsonl
for count in 20 200; do
    folder=$([ $count = 20 ] && echo "$1" || echo "$2")
    cp "$folder"/summary.router-test.journal.jsonl "$folder"/summary.full-schema-test.journal.jsonl \
        "$DEST/journals/bl$count/"
done
tar -cJf "$DEST/2/journals.tar.xz" -C "$DEST/journals" bl20 bl200 && rm -rf "$DEST/journals"

cp -r "$DEST"/1/. "$DEST"/2/. "$DEST"/3/. "$DEST/all/"  # the whole stash in one folder, for a dry run here
du -sh "$DEST"/1 "$DEST"/2 "$DEST"/3
