#!/usr/bin/env bash
# Re-fetch the dashboard's third-party assets from the npm registry, at pinned
# versions, into src/aibill/web/static/vendor/ (committed: the dashboard needs
# no internet). Run it to check where the committed files came from: after it,
# `git status` shows no change unless the registry served something else.
#
#   Chart.js           chart.js@4.6.1          dist/chart.umd.min.js, LICENSE.md
#   Inter (the font)   @fontsource/inter@5.3.0 latin 400 and 600 woff2, LICENSE
#   Swagger UI (/docs) swagger-ui-dist@5.35.0  swagger-ui-bundle.js (+ its LICENSE.txt),
#                                              swagger-ui.css, LICENSE, NOTICE
set -euo pipefail
cd "$(dirname "$0")/.."

CHARTJS=4.6.1
INTER=5.3.0
SWAGGER_UI=5.35.0
DEST=src/aibill/web/static/vendor
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

(
  cd "$SCRATCH"
  npm init -y >/dev/null
  npm install --no-audit --no-fund --ignore-scripts --loglevel=error \
    "chart.js@$CHARTJS" "@fontsource/inter@$INTER" "swagger-ui-dist@$SWAGGER_UI" >/dev/null
)
mods=$SCRATCH/node_modules

rm -rf "$DEST"
mkdir -p "$DEST/chartjs" "$DEST/inter" "$DEST/swagger-ui"
cp "$mods/chart.js/dist/chart.umd.min.js" "$DEST/chartjs/chart.umd.min.js"
cp "$mods/chart.js/LICENSE.md" "$DEST/chartjs/LICENSE.md"
for weight in 400 600; do
  cp "$mods/@fontsource/inter/files/inter-latin-$weight-normal.woff2" "$DEST/inter/"
done
cp "$mods/@fontsource/inter/LICENSE" "$DEST/inter/LICENSE"
for file in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE; do
  cp "$mods/swagger-ui-dist/$file" "$DEST/swagger-ui/$file"
done

{
  echo "# Third-party assets"
  echo
  echo "Fetched by scripts/vendor_assets.sh from the npm registry; do not edit."
  echo
  echo "| package | version | files |"
  echo "|---|---|---|"
  echo "| chart.js (MIT) | $CHARTJS | chartjs/chart.umd.min.js, chartjs/LICENSE.md |"
  echo "| @fontsource/inter (OFL-1.1) | $INTER | inter/inter-latin-{400,600}-normal.woff2, inter/LICENSE |"
  echo "| swagger-ui-dist (Apache-2.0) | $SWAGGER_UI | swagger-ui/swagger-ui-bundle.js{,.LICENSE.txt}, swagger-ui/swagger-ui.css, swagger-ui/LICENSE, swagger-ui/NOTICE |"
  echo
  echo "SHA-256:"
  echo
  echo '```'
  (cd "$DEST" && find . -type f ! -name README.md | sort | xargs sha256sum)
  echo '```'
} >"$DEST/README.md"
echo "vendored into $DEST:"
(cd "$DEST" && find . -type f | sort)
