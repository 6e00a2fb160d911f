#!/usr/bin/env bash
# Idempotent machine set-up for the demo and the tests: system packages, a Docker engine,
# the Python package, and the reference model images. Safe to run again; it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[provision] %s\n' "$*" >&2; }
# PROVISION_FOR=demo (scripts/demo.sh): only what `bluegreen demo` needs (no PostgreSQL, browser,
# load tools or third-party example images), so that a fresh machine reaches the demo sooner.
for_demo=false
[ "${PROVISION_FOR:-}" = demo ] && for_demo=true

need_pkgs=()
pairs="dockerd:docker.io haproxy:haproxy debootstrap:debootstrap sqlite3:sqlite3 prometheus-alertmanager:prometheus-alertmanager"
$for_demo || pairs="$pairs nginx:nginx-light wrk:wrk hey:hey prometheus:prometheus pg_ctlcluster:postgresql \
  pg_dump:postgresql-client pgbackrest:pgbackrest chromium:chromium chromedriver:chromium-driver \
  sshd:openssh-server"
for pair in $pairs; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing packages: ${need_pkgs[*]} (run as root, or install them with apt-get)"; exit 1
  fi
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  # Install without starting services (openssh-server would start an sshd on port 22): the tests
  # start the daemons they need on their own ports and stop them.
  policy_added=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_added=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  if $policy_added; then rm -f /usr/sbin/policy-rc.d; fi
fi

# A Docker engine: use the one DOCKER_HOST points at, or start dockerd on the default socket.
if ! docker info >/dev/null 2>&1; then
  if [ -n "${DOCKER_HOST:-}" ]; then
    log "DOCKER_HOST=$DOCKER_HOST does not answer"; exit 1
  fi
  log "starting dockerd"
  mkdir -p /var/log
  nohup /usr/sbin/dockerd --storage-driver=overlay2 --bridge=none --iptables=false --ip6tables=false \
    --host unix:///var/run/docker.sock --pidfile /var/run/docker.pid >/var/log/bluegreen-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/bluegreen-dockerd.log"; tail -20 /var/log/bluegreen-dockerd.log >&2; exit 1; }
fi

# PostgreSQL: start the cluster and make the role the tests use.
if ! $for_demo; then
if ! pg_lsclusters --no-header 2>/dev/null | grep -q .; then
  log "creating a PostgreSQL cluster"
  pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main >/dev/null
fi
read -r pg_version pg_name _ _ <<<"$(pg_lsclusters --no-header | head -1)"
if ! pg_lsclusters --no-header | head -1 | grep -q online; then
  log "starting PostgreSQL $pg_version/$pg_name"
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_name" start
fi
for _ in $(seq 1 40); do su postgres -c "psql -tAc 'SELECT 1'" >/dev/null 2>&1 && break; sleep 0.25; done
if ! su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname = 'bluegreen'\"" | grep -q 1; then
  su postgres -c "psql -qc \"CREATE ROLE bluegreen LOGIN PASSWORD 'bluegreen' CREATEDB\""
fi
fi

# The Python package with its test tools, installed from this checkout (editable).
installed=$(cd / && python3 -c "import bluegreen.orchestrator.cli, pytest, typer; print(bluegreen.__file__)" 2>/dev/null || true)
if [ "$installed" != "$PWD/bluegreen/__init__.py" ] || [ pyproject.toml -nt .provisioned-pip ]; then
  log "installing the bluegreen package"
  python3 -m pip install -q --disable-pip-version-check -e '.[test]'
  touch .provisioned-pip
fi
# Byte-compile the checkout as installing a wheel does: with PYTHONDONTWRITEBYTECODE set, every
# command would otherwise compile the package from source at start. (compileall skips links, so
# the real folders are named.)
python3 -m compileall -q orchestrator environments backups bluegreen >/dev/null

# The reference images (classifier and regressor, v1 and v2); tags built from these sources are kept.
if $for_demo; then
  bluegreen images build
else
  bluegreen images build --all --examples
fi
