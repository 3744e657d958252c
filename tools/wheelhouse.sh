#!/usr/bin/env bash
# Download every wheel the course installs into one folder, for lab machines without internet.
#   tools/wheelhouse.sh PYTHON OUT TORCH_SPEC EMBEDDED [extra pip options for the torch download]
# The default index is the learner's own pip configuration. An empty TORCH_SPEC or EMBEDDED skips
# that download; WHEELHOUSE_REQUIREMENTS (space-separated files) replaces the two lock files.
# pip only adds files to OUT (a second run downloads what is missing); nothing else is touched.
set -euo pipefail
python="$1"; out="$2"; torch_spec="$3"; embedded="$4"; shift 4
root="$(cd "$(dirname "$0")/.." && pwd)"
reqs=${WHEELHOUSE_REQUIREMENTS:-"$root/requirements/lock.txt $root/requirements/lock-dev.txt"}
mkdir -p "$out"
pip=("$python" -m pip --disable-pip-version-check -q)
if [ -n "$torch_spec" ]; then "${pip[@]}" download -d "$out" "$torch_spec" "$@"; fi
for r in $reqs; do "${pip[@]}" download -d "$out" -r "$r"; done
if [ -n "$embedded" ]; then "${pip[@]}" download -d "$out" --no-deps "$embedded"; fi
"${pip[@]}" download -d "$out" "setuptools>=64" wheel          # to install the course itself
"${pip[@]}" wheel --no-deps --no-build-isolation -w "$out" "$root"
echo "wheelhouse: $(ls "$out" | wc -l) files, $(du -sh "$out" | cut -f1) in $out"
