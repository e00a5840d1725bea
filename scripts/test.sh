#!/usr/bin/env bash
# The whole test suite, from a clean checkout: installs what the tests need, starts what they talk to.
# Debian packages: dcmtk (real DICOM peers), dicom3tools (dciodvfy), orthanc and orthanc-dicomweb (the PACS the
# pull and DICOMweb tests talk to), chromium (the viewer test's browser), npm (fetches the OHIF viewer). PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth) is started if it is
# installed but not running. Arguments are passed to pytest. The tests run in TEST_WORKERS processes (default 2,
# one module per process: most of a test's time is spent waiting on the servers it starts); `-n 0` runs them in
# this process.
set -uo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dciodvfy >/dev/null || missing+=(dicom3tools)
command -v storescu >/dev/null || missing+=(dcmtk)
[ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
command -v chromium >/dev/null || missing+=(chromium)  # the viewer's browser test (Playwright drives it)
command -v npm >/dev/null || missing+=(npm)  # fetches the pinned OHIF viewer
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { echo "could not install ${missing[*]}" >&2; exit 1; }
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || exit 1
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' || exit 1

./scripts/fetch-viewer.sh || exit 1

export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}"
.venv/bin/ruff check . || exit 1
.venv/bin/mypy || exit 1
.venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
