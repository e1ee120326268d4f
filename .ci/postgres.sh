#!/usr/bin/env bash
# The archive's tests (tests/test_archive*.py) run against a real PostgreSQL: they start a
# throw-away cluster with the server binaries (initdb, pg_ctl) as an unprivileged user, or use
# $CHATLEDGER_TEST_PG. Install Debian's binaries (and libpq, which psycopg needs) when missing.
set -euo pipefail

if command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo ".ci/postgres.sh: no PostgreSQL server binaries and no apt-get to install them" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# The tests make their own cluster: the package's default one would only sit on port 5432.
$SUDO mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
