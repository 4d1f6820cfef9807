#!/usr/bin/env sh
# Post a workflow (API format) with curl, wait for it to finish, and download the image it saved,
# exactly as against ComfyUI. Usage: examples/curl_roundtrip.sh [SERVER] [OUT.png]
set -eu
server=${1:-http://127.0.0.1:8188}
out=${2:-roundtrip.png}

answer=$(curl -sf -X POST "$server/prompt" -d '{"prompt": {
  "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 1, "color": 16711680}},
  "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "roundtrip"}}}}')
prompt_id=$(printf '%s' "$answer" | python3 -c 'import json, sys; print(json.load(sys.stdin)["prompt_id"])')

# Poll the history until the prompt is there (up to 60 s), then take the first saved image.
tries=0
while :; do
  entry=$(curl -sf "$server/history/$prompt_id")
  [ "$entry" != "{}" ] && break
  tries=$((tries + 1))
  [ "$tries" -gt 600 ] && { echo "prompt $prompt_id did not finish" >&2; exit 1; }
  sleep 0.1
done
query=$(printf '%s' "$entry" | python3 -c '
import json, sys, urllib.parse
entry = next(iter(json.load(sys.stdin).values()))
image = entry["outputs"]["2"]["images"][0]
print(urllib.parse.urlencode({"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]}))')
curl -sf -o "$out" "$server/view?$query"
echo "$out"
