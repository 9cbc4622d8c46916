#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from tests/fixtures/coder-webhook-samples/ (the corpus folders
# are git-ignored; run this before `cargo fuzz run`, it only adds files).
#   payload_render: each sample as is.
#   markdown:       each sample's texts in the target's NUL-separated layout
#                   (body_markdown, title, body, title_markdown, notification_name, note,
#                   then label/url pairs).
set -euo pipefail
cd "$(dirname "$0")"
samples=../tests/fixtures/coder-webhook-samples
mkdir -p corpus/payload_render corpus/markdown
for f in "$samples"/*; do
  case $f in *.md) continue ;; esac
  cp "$f" "corpus/payload_render/seed-$(basename "$f")"
done
python3 - "$samples" corpus/markdown <<'PY'
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src)):
    if name.endswith(".md"):
        continue
    with open(os.path.join(src, name), "rb") as f:
        doc = json.load(f)
    p = doc.get("payload") or {}
    body_md = doc.get("body_markdown")
    fields = [
        "\x01" if body_md is None else body_md,
        doc.get("title") or "",
        doc.get("body") or "",
        doc.get("title_markdown") or "",
        p.get("notification_name") or "",
        "",
    ]
    for a in p.get("actions") or []:
        fields += [a.get("label") or "", a.get("url") or ""]
    with open(os.path.join(dst, "seed-" + name), "wb") as f:
        f.write("\0".join(fields).encode())
PY
echo "corpus/payload_render: $(ls corpus/payload_render | wc -l) files; corpus/markdown: $(ls corpus/markdown | wc -l) files"
