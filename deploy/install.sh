#!/usr/bin/env bash
# Install or update ear on a Debian/Ubuntu VPS, next to the site's Nginx. Safe to run again.
#
#   sudo git clone <this repository> /srv/ear && sudo /srv/ear/deploy/install.sh
#
# It installs apt packages, creates the `ear` system user, a venv with the CPU build of torch,
# the data directory, a .env with a generated admin token (kept on later runs), Nginx's
# /ear/ location snippet and its http-level request limits, and Supervisor's `ear` and
# `ear-worker` programs, then (re)starts them.
# Settings (environment): EAR_HOME (default: this checkout), EAR_USER (ear),
# EAR_TORCH_INDEX_URL (PyTorch's CPU index), EAR_APT=0 to skip apt, EAR_PUBLIC_URL (written
# into a new .env: where the public reaches ear, e.g. https://example.org/ear),
# EAR_NGINX_SNIPPETS (/etc/nginx/snippets), EAR_NGINX_CONF_DIR (/etc/nginx/conf.d: a folder
# nginx.conf includes inside `http { }`, as Debian's does), EAR_SUPERVISOR_CONF_DIR
# (/etc/supervisor/conf.d), EAR_LOG_DIR (/var/log/ear).
set -euo pipefail
home=${EAR_HOME:-$(cd "$(dirname "$0")/.." && pwd)}
user=${EAR_USER:-ear}
snippets=${EAR_NGINX_SNIPPETS:-/etc/nginx/snippets}
nginx_http=${EAR_NGINX_CONF_DIR:-/etc/nginx/conf.d}
programs=${EAR_SUPERVISOR_CONF_DIR:-/etc/supervisor/conf.d}
logs=${EAR_LOG_DIR:-/var/log/ear}
cd "$home"

if [ "${EAR_APT:-1}" != 0 ]; then
  apt-get update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q ffmpeg python3 python3-venv g++ python3-dev \
    nginx supervisor
fi

id -u "$user" >/dev/null 2>&1 || useradd --system --home-dir "$home" --shell /usr/sbin/nologin "$user"

[ -x .venv/bin/python ] || python3 -m venv .venv
deploy/install-torch.sh .venv
.venv/bin/pip install -q --disable-pip-version-check "$home"

if [ ! -f .env ]; then
  token=$(.venv/bin/python -c "import secrets; print(secrets.token_urlsafe(32))")
  sed -e "s|^EAR_DATA_DIR=.*|EAR_DATA_DIR=$home/data|" -e "s|^EAR_ADMIN_TOKEN=.*|EAR_ADMIN_TOKEN=$token|" \
    -e "s|^EAR_PUBLIC_URL=.*|EAR_PUBLIC_URL=${EAR_PUBLIC_URL:-}|" .env.example > .env
  chmod 600 .env
  echo "wrote $home/.env (admin token inside)"
fi
if ! grep -Eq '^EAR_SECRET_KEY=.+' .env; then  # the dashboard's cookies (an older .env lacks it)
  key=$(.venv/bin/python -c "import secrets; print(secrets.token_urlsafe(32))")
  if grep -q '^EAR_SECRET_KEY=' .env; then sed -i "s|^EAR_SECRET_KEY=.*|EAR_SECRET_KEY=$key|" .env
  else echo "EAR_SECRET_KEY=$key" >> .env; fi
fi
chown "$user" .env
if grep -Eq '^EAR_DATABASE_URL=postgres(ql)?://' .env; then  # the catalog on PostgreSQL: its driver
  .venv/bin/pip install -q --disable-pip-version-check "$home[postgresql]"
fi
set -a; . ./.env; set +a
port=${EAR_PORT:-5001}
mkdir -p "${EAR_DATA_DIR:-$home/data}" "$logs"
chown -R "$user" "${EAR_DATA_DIR:-$home/data}" "$logs"

mkdir -p "$snippets" "$nginx_http" "$programs"
sed "s|127.0.0.1:5001|127.0.0.1:$port|g" nginx/ear.conf > "$snippets/ear.conf"
cp nginx/ear-limits.conf "$nginx_http/ear-limits.conf"  # the zones ear.conf's limits use
sed -e "s|/srv/ear|$home|g" -e "s|^user=ear|user=$user|" -e "s|/var/log/ear/|$logs/|" \
  supervisor/ear_service.conf > "$programs/ear.conf"

if command -v supervisorctl >/dev/null && supervisorctl pid >/dev/null 2>&1; then  # supervisord up
  supervisorctl reread && supervisorctl update
  supervisorctl restart ear ear-worker
fi
if command -v nginx >/dev/null && nginx -t 2>/dev/null; then
  nginx -s reload 2>/dev/null || true
fi
cat <<MSG
ear is installed in $home. If not done yet, add to the site's server block (HTTPS):
    include $snippets/ear.conf;
($nginx_http/ear-limits.conf must be included in nginx.conf's http block: Debian's does.)
then: nginx -t && systemctl reload nginx
Update:   git -C $home pull && $home/deploy/install.sh
Rollback: git -C $home checkout <previous commit or tag> && $home/deploy/install.sh
MSG
