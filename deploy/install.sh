#!/usr/bin/env bash
# Install mcp-supervisor as a service: a virtual environment, the two commands on PATH, a config
# (imported from the MCP clients' own configs when there are any), the state directory, the vault
# key and a first backup, the systemd units (system, or --user) with the daily-job timer, then
# `status`. Without systemd it prints the cron lines instead.
#
# Idempotent: a second run changes nothing and says so. `--uninstall` removes the units and the
# commands and leaves the config, the backups and the key where they are (and says where).
#
#   deploy/install.sh [--user] [--job CMD] [--job-time HH:MM] [--prefix DIR] [--bin-dir DIR]
#                     [--config FILE] [--unit-dir DIR] [--no-systemd] [--no-start] [--uninstall]
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=system
[ "$(id -u)" = 0 ] || MODE=user
JOB="" JOB_TIME="" PREFIX="" BIN_DIR="" CONFIG="" UNIT_DIR="" USE_SYSTEMD=auto START=yes ACTION=install
PYTHON="${PYTHON:-python3}"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "mcp-supervisor: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --user) MODE=user ;;
    --system) MODE=system ;;
    --job) JOB="${2:?--job needs a command}"; shift ;;
    --job-time) JOB_TIME="${2:?--job-time needs HH:MM}"; shift ;;
    --prefix) PREFIX="${2:?}"; shift ;;
    --bin-dir) BIN_DIR="${2:?}"; shift ;;
    --config) CONFIG="${2:?}"; shift ;;
    --unit-dir) UNIT_DIR="${2:?}"; shift ;;
    --no-systemd) USE_SYSTEMD=no ;;
    --no-start) START=no ;;
    --uninstall) ACTION=uninstall ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
  esac
  shift
done
if [ -n "$JOB_TIME" ] && ! [[ "$JOB_TIME" =~ ^([01][0-9]|2[0-3]):[0-5][0-9]$ ]]; then
  die "--job-time $JOB_TIME: use HH:MM (24 h), e.g. 09:00"
fi

if [ "$MODE" = system ]; then
  [ "$(id -u)" = 0 ] || die "a system install needs root (sudo make install), or use --user"
  PREFIX="${PREFIX:-/opt/mcp-supervisor}"
  BIN_DIR="${BIN_DIR:-/usr/local/bin}"
  CONFIG="${CONFIG:-/etc/mcp-supervisor/mcp-supervisor.toml}"
  UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"
  STATE_DIR=/var/lib/mcp-supervisor
  KEY_FILE=/etc/mcp-supervisor/vault.key
  SECRETS=/etc/mcp-supervisor/secrets.env
  SYSTEMCTL_ARGS=()
  UNIT_SOURCE="$SRC/deploy/systemd/mcp-supervisor.service"
else
  PREFIX="${PREFIX:-$HOME/.local/share/mcp-supervisor/venv}"
  BIN_DIR="${BIN_DIR:-$HOME/.local/bin}"
  CONFIG="${CONFIG:-$HOME/.config/mcp-supervisor/mcp-supervisor.toml}"
  UNIT_DIR="${UNIT_DIR:-$HOME/.config/systemd/user}"
  STATE_DIR="$HOME/.local/state/mcp-supervisor"
  KEY_FILE="$HOME/.config/mcp-supervisor/vault.key"
  SECRETS="$HOME/.config/mcp-supervisor/secrets.env"
  SYSTEMCTL_ARGS=(--user)
  UNIT_SOURCE="$SRC/deploy/systemd/mcp-supervisor.user.service"
fi
if [ "$USE_SYSTEMD" = auto ]; then
  if [ -d /run/systemd/system ] || [ "${SYSTEMCTL}" != systemctl ]; then USE_SYSTEMD=yes; else USE_SYSTEMD=no; fi
fi
CHANGED=0

# Write $2 (a file holding the new content) to $1 only when it differs; mode $3.
put() {
  local target="$1" content="$2" mode="$3"
  if [ -f "$target" ] && cmp -s "$content" "$target"; then
    rm -f "$content"; return 1
  fi
  mkdir -p "$(dirname "$target")"
  install -m "$mode" "$content" "$target.new.$$" && mv -f "$target.new.$$" "$target"
  rm -f "$content"
  say "wrote $target"
  CHANGED=1
}

systemctl_() { "$SYSTEMCTL" "${SYSTEMCTL_ARGS[@]}" "$@"; }

if [ "$ACTION" = uninstall ]; then
  if [ "$USE_SYSTEMD" = yes ]; then
    systemctl_ disable --now mcp-daily-job.timer mcp-report.timer mcp-backup.timer >/dev/null 2>&1 || true
    systemctl_ disable --now mcp-supervisor.service >/dev/null 2>&1 || true
  fi
  for unit in mcp-supervisor.service mcp-daily-job.service mcp-daily-job.timer mcp-report.service mcp-report.timer \
      mcp-backup.service mcp-backup.timer; do
    [ -e "$UNIT_DIR/$unit" ] && rm -f "$UNIT_DIR/$unit" && say "removed $UNIT_DIR/$unit"
  done
  rm -rf "$UNIT_DIR/mcp-supervisor.service.d"
  [ "$USE_SYSTEMD" = yes ] && { systemctl_ daemon-reload || true; }
  for cmd in mcp-supervisor supervisorctl-mcp; do
    [ -L "$BIN_DIR/$cmd" ] && rm -f "$BIN_DIR/$cmd" && say "removed $BIN_DIR/$cmd"
  done
  rm -rf "$PREFIX"
  say "uninstalled. Kept, on purpose: the config $CONFIG, the vault key $KEY_FILE (keep a copy:"
  say "  supervisorctl-mcp key export FILE), the backups and history under $STATE_DIR."
  exit 0
fi

# 1. the virtual environment (reinstalled only when the source changed)
stamp="$PREFIX/.mcp-supervisor-source"
want="$(cd "$SRC" && { git rev-parse HEAD 2>/dev/null || echo nogit; git status --porcelain -- pyproject.toml mcp_supervisor 2>/dev/null | sha256sum; } | sha256sum | cut -c1-16)"
if [ ! -x "$PREFIX/bin/mcp-supervisor" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing into $PREFIX (a virtual environment)"
  [ -x "$PREFIX/bin/python" ] || "$PYTHON" -m venv "$PREFIX"
  "$PREFIX/bin/pip" install --quiet --upgrade pip
  "$PREFIX/bin/pip" install --quiet "$SRC"
  echo "$want" > "$stamp"
  CHANGED=1
fi

# 2. the commands on PATH
mkdir -p "$BIN_DIR"
for cmd in mcp-supervisor supervisorctl-mcp; do
  if [ "$(readlink "$BIN_DIR/$cmd" 2>/dev/null)" != "$PREFIX/bin/$cmd" ]; then
    [ -e "$BIN_DIR/$cmd" ] && [ ! -L "$BIN_DIR/$cmd" ] && die "$BIN_DIR/$cmd exists and is not our link; move it away"
    ln -sfn "$PREFIX/bin/$cmd" "$BIN_DIR/$cmd"
    say "linked $BIN_DIR/$cmd"
    CHANGED=1
  fi
done
CTL="$PREFIX/bin/supervisorctl-mcp"

# 3. the config: kept when it exists; else imported from the MCP clients, else a starter file
if [ ! -e "$CONFIG" ]; then
  mkdir -p "$(dirname "$CONFIG")"
  import_err="$(mktemp)"
  if "$CTL" import --output "$CONFIG" --state-dir "$STATE_DIR" --backup-location "$STATE_DIR/backups" \
       --key-file "$KEY_FILE" --project "$HOME" >/dev/null 2>"$import_err"; then
    say "wrote $CONFIG from your MCP client configs (the variables to set are listed at its top)"
  elif grep -q "no MCP client config found" "$import_err"; then
    sed -e "s#@STATE_DIR@#$STATE_DIR#g" -e "s#@KEY_FILE@#$KEY_FILE#g" "$SRC/deploy/starter.toml" > "$CONFIG"
    say "wrote a starter $CONFIG (no MCP client config found to import): add your servers there"
  else
    cat "$import_err" >&2
    rm -f "$import_err"
    die "could not import your MCP client configs (above); fix that file or write $CONFIG yourself, then run again"
  fi
  rm -f "$import_err"
  chmod 0640 "$CONFIG"
  CHANGED=1
fi
"$CTL" check-config "$CONFIG" >/dev/null || { "$CTL" check-config "$CONFIG" || true; die "$CONFIG does not load (above)"; }

# 4. state directory, key (0600) and the first backup (only while none exists)
if [ ! -d "$STATE_DIR" ]; then
  mkdir -p "$STATE_DIR"; CHANGED=1
fi
# system (root) daemon: servers (other accounts) reach their HOME in homes/<server> by name; all else in it is 0600/0700
if [ "$MODE" = system ]; then chmod 0711 "$STATE_DIR"; else chmod 0700 "$STATE_DIR"; fi
if [ ! -e "$SECRETS" ]; then
  mkdir -p "$(dirname "$SECRETS")"
  ( umask 077; printf '# KEY=value lines for the ${KEY} references in %s (mode 0600)\n' "$CONFIG" > "$SECRETS" )
  say "wrote $SECRETS (mode 0600): put the tokens your config references there"
  CHANGED=1
fi
if "$CTL" --config "$CONFIG" backups --json 2>/dev/null | grep -q '"id"'; then
  :
elif grep -q '^\[\[configs\]\]' "$CONFIG"; then
  if "$CTL" --config "$CONFIG" backup >/dev/null; then
    say "first backup taken (key: $KEY_FILE, mode 0600: keep an offline copy with supervisorctl-mcp key export FILE)"
    CHANGED=1
  else
    say "warning: the first backup failed; see: $CTL --config $CONFIG backup"
  fi
fi

# 5. units
unit_tmp="$(mktemp)"
if [ "$MODE" = system ]; then
  sed -e "s#/usr/local/bin/#$BIN_DIR/#g" -e "s#/etc/mcp-supervisor/mcp-supervisor.toml#$CONFIG#g" \
    "$UNIT_SOURCE" > "$unit_tmp"
else
  sed -e "s#%h/.local/bin/#$BIN_DIR/#g" -e "s#%h/.config/mcp-supervisor/mcp-supervisor.toml#$CONFIG#g" \
    -e "s#%h/.config/mcp-supervisor/secrets.env#$SECRETS#g" "$UNIT_SOURCE" > "$unit_tmp"
fi
units_changed=0
put "$UNIT_DIR/mcp-supervisor.service" "$unit_tmp" 0644 && units_changed=1
if [ "$MODE" = system ]; then
  # the folders of the watched client configs stay writable under ProtectHome=read-only
  paths_tmp="$(mktemp)"
  { echo "# Written by install.sh from $CONFIG's [[configs]]: the daemon restores these files."
    echo "[Service]"
    "$PREFIX/bin/python" - "$CONFIG" <<'PY'
import sys, os
from mcp_supervisor.config import load_config
config = load_config(sys.argv[1])
dirs = sorted({os.path.dirname(str(c.path)) for c in config.configs})
for d in dirs:
    print(f"ReadWritePaths=-{d}")
PY
  } > "$paths_tmp"
  put "$UNIT_DIR/mcp-supervisor.service.d/paths.conf" "$paths_tmp" 0644 && units_changed=1
fi
# optional timers, installed but not enabled (docs/operations.md, "Timers"): report and weekly backup
for unit in mcp-report.service mcp-report.timer mcp-backup.service mcp-backup.timer; do
  extra_tmp="$(mktemp)"
  sed -e "s#/usr/local/bin/#$BIN_DIR/#g" -e "s#/etc/mcp-supervisor/mcp-supervisor.toml#$CONFIG#g" \
    "$SRC/deploy/systemd/$unit" > "$extra_tmp"
  put "$UNIT_DIR/$unit" "$extra_tmp" 0644 && units_changed=1
done
job_tmp="$(mktemp)"
if [ -n "$JOB" ]; then
  sed -e "s#^ExecStart=.*#ExecStart=$BIN_DIR/supervisorctl-mcp --config $CONFIG run --wait 300 -- $JOB#" \
    "$SRC/deploy/systemd/mcp-daily-job.service" > "$job_tmp"
  put "$UNIT_DIR/mcp-daily-job.service" "$job_tmp" 0644 && units_changed=1
  timer_tmp="$(mktemp)"
  sed -e "s#^OnCalendar=.*#OnCalendar=*-*-* ${JOB_TIME:-09:00}:00#" "$SRC/deploy/systemd/mcp-daily-job.timer" > "$timer_tmp"
  put "$UNIT_DIR/mcp-daily-job.timer" "$timer_tmp" 0644 && units_changed=1
else
  rm -f "$job_tmp"
fi

if [ "$USE_SYSTEMD" = yes ]; then
  [ "$units_changed" = 1 ] && systemctl_ daemon-reload
  if ! systemctl_ is-enabled --quiet mcp-supervisor.service 2>/dev/null; then
    if [ "$START" = yes ]; then systemctl_ enable --now mcp-supervisor.service; else systemctl_ enable mcp-supervisor.service; fi
    CHANGED=1
  elif [ "$units_changed" = 1 ] && [ "$START" = yes ]; then
    systemctl_ restart mcp-supervisor.service
  fi
  if [ -n "$JOB" ] && ! systemctl_ is-enabled --quiet mcp-daily-job.timer 2>/dev/null; then
    systemctl_ enable --now mcp-daily-job.timer; CHANGED=1
  fi
  [ "$MODE" = user ] && say "to keep it running while you are logged out: loginctl enable-linger $USER"
else
  say "no systemd here: run the daemon from your init system, or at boot with cron, and guard the job:"
  echo "  @reboot $BIN_DIR/mcp-supervisor --config $CONFIG >>$STATE_DIR/daemon.log 2>&1"
  echo "  0 9 * * * $BIN_DIR/supervisorctl-mcp --config $CONFIG run --wait 300 -- ${JOB:-/path/to/analysis_automation.py}"
fi

if [ "$CHANGED" = 0 ]; then say "already installed; nothing changed"; fi
if [ "$USE_SYSTEMD" = yes ] && [ "$START" = yes ]; then
  "$CTL" --config "$CONFIG" ready --wait 30 >/dev/null 2>&1 || true
  "$CTL" --config "$CONFIG" status || say "the daemon does not answer yet: journalctl ${SYSTEMCTL_ARGS[*]} -u mcp-supervisor"
fi
