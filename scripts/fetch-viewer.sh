#!/usr/bin/env bash
# Fetch the OHIF viewer that `serve` offers at /viewer: the prebuilt dist/ of the npm package @ohif/app,
# pinned by version and SHA-256, unpacked into the folder `http.viewer_dir` names (default var/viewer).
# Never committed; run again after changing the pin. Needs npm (the npm registry) once, not at run time.
#   ./scripts/fetch-viewer.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="3.13.2"
SHA256="b189d3963bfc58e9394a9db8c7be75d07beb029ec211dbb126d47b62969dd3f1"
target="${1:-var/viewer}"
if [ -f "$target/.version" ] && [ "$(cat "$target/.version")" = "$VERSION /viewer/ 2" ] && [ -f "$target/index.html" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to fetch the viewer (@ohif/app $VERSION)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent --quiet "@ohif/app@$VERSION" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
echo "$SHA256  $tarball" | sha256sum --check --quiet - || { echo "@ohif/app $VERSION: checksum mismatch" >&2; exit 1; }
tar -xzf "$tarball" -C "$work" package/dist package/LICENSE
# the build loads its chunks and workers from "/": the bridge serves it under /viewer/
dist="$work/package/dist"
rewritten=$(grep -rl --include='*.js' '__webpack_require__.p = "/";' "$dist" | wc -l)
[ "$rewritten" -gt 0 ] || { echo "@ohif/app $VERSION: no public path to rewrite for /viewer/" >&2; exit 1; }
grep -rl --include='*.js' '__webpack_require__.p = "/";' "$dist" \
  | xargs sed -i 's#__webpack_require__.p = "/";#__webpack_require__.p = "/viewer/";#'
sed -i 's#url(/\([^/]\)#url(/viewer/\1#g' "$dist"/*.css
rm -rf "$target.new" && mkdir -p "$(dirname "$target")"
mv "$dist" "$target.new"
cp "$work/package/LICENSE" "$target.new/LICENSE.ohif"
echo "$VERSION /viewer/ 2" > "$target.new/.version"
rm -rf "$target" && mv "$target.new" "$target"
echo "OHIF viewer $VERSION in $target"
