#!/bin/sh
# A job runner that speaks nothing but the relay-rs HTTP protocol, with curl.
#
#   runner.sh enqueue  BASE JSON          POST /enqueue; prints the status
#   runner.sh next     BASE QUEUE         GET /v1/next; prints the status, then the body
#   runner.sh beat     BASE QUEUE ID JSON PATCH /v1/heartbeat with JSON as the job's state; prints the status
#   runner.sh complete BASE QUEUE ID      DELETE /v1/complete; prints the status
#   runner.sh work     BASE QUEUE BEATS   waits for a job, heartbeats BEATS times (state {"step": N}),
#                                         completes it; prints its id
#   runner.sh abandon  BASE QUEUE         waits for a job and walks away (no heartbeat, no complete);
#                                         prints its body
# RELAY_TOKEN, when set, is sent as a bearer token.
set -eu

body=$(mktemp)
trap 'rm -f "$body"' EXIT

call() { # METHOD URL [JSON]: prints the status; the response body is left in $body
    if [ -n "${RELAY_TOKEN:-}" ]; then
        set -- "$@" -H "Authorization: Bearer $RELAY_TOKEN"
    fi
    method=$1 url=$2
    shift 2
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
        data=$1
        shift
        curl -sS -o "$body" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json' --data-binary "$data" "$@" "$url"
    else
        curl -sS -o "$body" -w '%{http_code}' -X "$method" "$@" "$url"
    fi
}

wait_for_job() { # BASE QUEUE: polls /v1/next until a job comes (a runner backs off on 204)
    tries=0
    while [ "$(call GET "$1/v1/next?queue=$2")" != 200 ]; do
        tries=$((tries + 1))
        [ "$tries" -lt 300 ] || { echo "no job after $tries tries" >&2; exit 1; }
        sleep 0.05
    done
}

job_id() { sed -n 's/^{"id":"\([^"]*\)".*/\1/p' "$body"; }

cmd=$1
shift
case $cmd in
enqueue) call POST "$1/enqueue" "$2"; echo ;;
next) call GET "$1/v1/next?queue=$2"; echo; cat "$body"; echo ;;
beat) call PATCH "$1/v1/heartbeat?queue=$2&job_id=$3" "$4"; echo ;;
complete) call DELETE "$1/v1/complete?queue=$2&job_id=$3"; echo ;;
work)
    wait_for_job "$1" "$2"
    id=$(job_id)
    step=1
    while [ "$step" -le "$3" ]; do
        status=$(call PATCH "$1/v1/heartbeat?queue=$2&job_id=$id" "{\"step\":$step}")
        [ "$status" = 202 ] || { echo "heartbeat: $status" >&2; exit 1; }
        step=$((step + 1))
        sleep 0.2
    done
    status=$(call DELETE "$1/v1/complete?queue=$2&job_id=$id")
    [ "$status" = 200 ] || { echo "complete: $status" >&2; exit 1; }
    echo "$id"
    ;;
abandon) wait_for_job "$1" "$2"; cat "$body"; echo ;;
*) echo "unknown command: $cmd" >&2; exit 2 ;;
esac
