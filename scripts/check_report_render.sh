#!/usr/bin/env bash
# Render a report HTML in headless Chromium and save a screenshot, to look at it the way a reader will.
#
#   scripts/check_report_render.sh results/grid-x/report.html [screenshot.png] [height_px]
#
# Installs nothing: needs Debian's `chromium` (apt-get install chromium) or chromium-browser / google-chrome
# on PATH; exits 0 with a message when none is there. Network is disabled for the page (a proxy that does
# not exist), so anything the report would fetch shows up as missing in the screenshot: the report must be
# self-contained. Exit status: 1 when the screenshot was not written or is empty.
set -euo pipefail

html=${1:?usage: $0 REPORT.html [SCREENSHOT.png] [HEIGHT_PX]}
shot=${2:-${html%.html}.png}
height=${3:-4000}

browser=""
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then browser=$name; break; fi
done
if [[ -z "$browser" ]]; then
    echo "check_report_render: no chromium on PATH; skipped (apt-get install chromium)" >&2
    exit 0
fi
[[ -f "$html" ]] || { echo "check_report_render: no such file: $html" >&2; exit 1; }

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$shot"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --proxy-server=127.0.0.1:9 --hide-scrollbars \
    --user-data-dir="$profile" --window-size=1280,"$height" \
    --screenshot="$(realpath -m "$shot")" "file://$(realpath "$html")" >/dev/null 2>&1 || true
if [[ ! -s "$shot" ]]; then
    echo "check_report_render: $browser wrote no screenshot for $html" >&2
    exit 1
fi
echo "screenshot: $shot"
