#!/usr/bin/env bash
# Run the ingestion job once, never two at a time for the same config, and say what its exit
# status means. Meant for cron (infra/schedules/crontab.example) or any scheduler that runs a
# command and alerts on its exit status.
#
#   infra/schedules/run-nightly.sh CONFIG [JOB ARGS...]
#   infra/schedules/run-nightly.sh configs/s3.yaml --index-url s3://bucket/prefix --runner=...
#
# JOB ARGS go to the job unchanged (--index-url, Beam pipeline options). Exit status: the job's
# own (0 published or nothing new to publish, 1 validation gate failed and nothing published,
# 2 could not run; anything else, e.g. 137 when killed, is passed through too), 2 for a usage
# error of this script, and 3 when another run for the same lock is still going (this run did
# nothing).
#
# Environment (all optional):
#   SEMQ_INGEST_CMD  the job command, split on whitespace (no quoting; default
#                    "python -m pipelines.ingest"), e.g. "/opt/semq/venv/bin/python -m
#                    pipelines.ingest" or "docker run --rm IMAGE"
#   SEMQ_WORKDIR     directory the job runs in; a relative CONFIG is relative to it
#                    (default: the repository root, two levels above this script)
#   SEMQ_LOCK_FILE   lock file (default: ${XDG_RUNTIME_DIR:-/tmp}/semq-ingest-<config name>.lock,
#                    one lock per config, i.e. per index)
#   SEMQ_ENV_FILE    a file of NAME=value lines to export before the run (credentials for
#                    ${ENV:NAME} references in the config); keep it outside the repository,
#                    mode 600. Prefer an instance role / workload identity and leave it unset.
set -euo pipefail

log() { printf '%s run-nightly: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
die() { log "ERROR: $*" >&2; exit 2; }

if [[ $# -lt 1 || "$1" == -* ]]; then
    die "usage: $0 CONFIG [JOB ARGS...]   (e.g. $0 configs/s3.yaml)"
fi
config=$1
shift

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workdir=${SEMQ_WORKDIR:-$(cd "$script_dir/../.." && pwd)}
cd "$workdir" || die "cannot enter SEMQ_WORKDIR $workdir"

read -r -a cmd <<< "${SEMQ_INGEST_CMD:-python -m pipelines.ingest}"
[[ ${#cmd[@]} -gt 0 ]] || die "SEMQ_INGEST_CMD is empty"

if [[ -n "${SEMQ_ENV_FILE:-}" ]]; then
    [[ -r "$SEMQ_ENV_FILE" ]] || die "SEMQ_ENV_FILE $SEMQ_ENV_FILE is not readable"
    set -a
    # shellcheck disable=SC1090
    source "$SEMQ_ENV_FILE"
    set +a
fi

command -v flock > /dev/null || die "flock not found (util-linux); refusing to run without a lock"
config_name=$(basename "$config")
config_name=${config_name%.*}
lock=${SEMQ_LOCK_FILE:-${XDG_RUNTIME_DIR:-/tmp}/semq-ingest-${config_name}.lock}
# Opened read-write without truncating, so a run that does not get the lock leaves the holder's
# note in the file. The job inherits descriptor 9: if this script dies, the lock stays held
# until the job itself ends, so a new run still cannot overlap it.
exec 9<> "$lock" || die "cannot open lock file $lock"
if ! flock --nonblock 9; then
    holder=$(head -c 200 "$lock" 2> /dev/null | tr -d '\n' || true)
    log "SKIPPED: another run for $config is still going (lock $lock held: ${holder:-unknown});" \
        "this run did nothing" >&2
    exit 3
fi
printf 'pid %s, started %s\n' "$$" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$lock"

log "start: ${cmd[*]} --config $config${*:+ $*} (in $workdir)"
rc=0
"${cmd[@]}" --config "$config" "$@" || rc=$?
case $rc in
    0) log "OK: published ($config; or nothing new: the latest version already came from" \
           "this input and config)" ;;
    1) log "GATE FAILED: validation gate not passed, nothing published ($config); see the" \
           "run's report.md; a data or config problem: a re-run on the same input and config" \
           "gives the same result" >&2 ;;
    2) log "COULD NOT RUN: bad config, unreadable input or pipeline error ($config);" \
           "see the job's stderr above; may be transient, a re-run is safe" >&2 ;;
    *) if (( rc > 128 )); then
           log "FAILED: the job was killed by signal $((rc - 128)) (status $rc, $config)" >&2
       else
           log "FAILED: the job exited with unexpected status $rc ($config)" >&2
       fi ;;
esac
exit "$rc"
