#!/usr/bin/env bash
# Install what the local Pacifica stack needs. Idempotent: a second run takes about a second.
#  1. Debian packages (postgresql, redis-server, libpq-dev, gcc, curl) if missing; needs root.
#  2. A venv at $PACIFICA_STACK_DIR/venv (default /tmp/pacifica-stack/venv, outside the repo and
#     separate from the project's .venv: the upstream services need peewee<4 and friends) with
#     the six real upstream services from PyPI, pinned. Skipped when the venv's stamp matches.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

T0=$SECONDS
PYTHON=${PACIFICA_STACK_PYTHON:-python3}

# ---------------------------------------------------------------- system packages
missing=()
[[ -n $PG_BIN && -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
[[ -e /usr/include/postgresql/libpq-fe.h ]] || missing+=(libpq-dev)  # psycopg2 builds from sdist
command -v gcc >/dev/null || missing+=(gcc)
command -v curl >/dev/null || missing+=(curl)
command -v runuser >/dev/null || missing+=(util-linux)
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)

if ((${#missing[@]})); then
  echo "install.sh: installing Debian packages: ${missing[*]}"
  if [[ $(id -u) != 0 ]]; then
    echo "install.sh: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  command -v apt-get >/dev/null || { echo "install.sh: no apt-get; install ${missing[*]} by hand" >&2; exit 1; }
  apt=(apt-get -o DPkg::Lock::Timeout=600)
  export DEBIAN_FRONTEND=noninteractive
  # Don't let the packages' maintainer scripts start system-wide postgresql/redis services.
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  cleanup_policy() { if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup_policy EXIT
  # apt-get update only if the package lists don't know a package (or the install fails on stale lists).
  if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    "${apt[@]}" update -qq
  fi
  if ! "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}"; then
    "${apt[@]}" update -qq
    "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}"
  fi
  cleanup_policy
  trap - EXIT
  echo "install.sh: Debian packages done after $((SECONDS - T0))s"
fi

# ---------------------------------------------------------------- upstream venv
# Direct requirements. Fixes for Python 3.11 / today's PyPI (see README.md):
#  peewee<4 (4.x dropped text_type and the sqliteext scheme), pytz (metadata imports it undeclared),
#  redis (Celery's Redis transport; ingest/cartd default to AMQP), packaging (kombu's Redis
#  transport imports it undeclared; a venv whose pip/setuptools were upgraded happens to have it).
requirements=(
  pacifica-archiveinterface==0.4.2
  pacifica-cartd==0.7.0
  pacifica-uniqueid==0.5.1
  pacifica-metadata==0.13.0
  pacifica-policy==0.8.3
  pacifica-ingest==0.4.1
  pacifica-uploader==0.3.1
  peewee==3.19.0
  pytz==2026.6
  redis==8.1.0
  packaging==26.3
)
# Everything else, as resolved in a run that passed end to end (pip freeze), for reproducibility.
constraints='amqp==5.4.2
annotated-doc==0.0.7
annotated-types==0.8.0
attrs==26.1.0
backports.functools-lru-cache==2.0.0
backports.tarfile==1.2.0
billiard==4.3.2
celery==5.7.0
certifi==2026.10.18
charset-normalizer==3.5.2
cheroot==11.1.2
CherryPy==18.10.0
click==8.5.1
click-didyoumean==0.3.1
click-plugins==1.1.1.2
click-repl==0.4.1
idna==3.20
jaraco.collections==5.2.1
jaraco.context==6.1.2
jaraco.functools==4.6.0
jaraco.text==4.3.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
kombu==5.7.0
markdown-it-py==4.3.0
mdurl==0.1.2
more-itertools==11.2.1
pacifica-namespace==0.0.2
portend==3.2.1
prompt_toolkit==3.0.53
psutil==7.2.2
psycopg2==2.9.13
pydantic==2.14.3
pydantic_core==2.50.4
Pygments==2.21.0
PyMySQL==1.2.4
python-dateutil==2.9.0.post0
PyYAML==6.0.3
referencing==0.37.0
requests==2.34.2
rich==15.0.0
rpds-py==2026.9.1
shellingham==1.5.4
six==1.17.0
tempora==5.13.0
tqdm==4.70.1
typer==0.29.2
typer-slim==0.24.0
typing-inspection==0.4.5
typing_extensions==4.16.0
tzlocal==5.4.5
urllib3==2.8.0
vine==5.1.0
wcwidth==0.9.4
zc.lockfile==4.0'

stamp_file=$PS_VENV/.pacifica-stack-stamp
stamp=$(printf '%s\n' "$("$PYTHON" -c 'import sys; print(sys.version)')" "${requirements[@]}" "$constraints" | sha256sum | cut -d' ' -f1)

if [[ -f $stamp_file && $(<"$stamp_file") == "$stamp" && -x $PS_VENV/bin/pacifica-ingest ]] \
  && "$PS_VENV/bin/python" -c 'import peewee, pytz, redis, psycopg2, packaging' 2>/dev/null; then
  echo "install.sh: venv $PS_VENV already up to date ($((SECONDS - T0))s)"
  exit 0
fi

mkdir -p "$PS_ROOT"
chmod 755 "$PS_ROOT"  # the postgres user must be able to traverse it (PG data lives below)
rm -rf "$PS_VENV"
"$PYTHON" -m venv "$PS_VENV"
printf '%s\n' "$constraints" >"$PS_ROOT/constraints.txt"
# (the grep drops this machine's noise about configured file:// indexes lacking a package)
"$PS_VENV/bin/python" -m pip install -q --disable-pip-version-check \
  -c "$PS_ROOT/constraints.txt" "${requirements[@]}" \
  2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
"$PS_VENV/bin/python" -c 'import peewee, pytz, redis, psycopg2, packaging, kombu.transport.redis, pacifica.metadata, pacifica.ingest, pacifica.cartd'
printf '%s\n' "$stamp" >"$stamp_file"
echo "install.sh: venv $PS_VENV installed in $((SECONDS - T0))s"
