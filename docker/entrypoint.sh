#!/bin/sh
# Roles of the Parley image: every entry of the Procfile (release, web, worker, beat; see the
# Procfile for what each does), plus
#   manage   any manage.py command, e.g. `manage createsuperuser`
# Anything else is executed as given. The Procfile is the one list of processes: roles are looked
# up in it, not repeated here.
set -eu

role="${1:-web}"
[ $# -gt 0 ] && shift

if [ "$role" = manage ]; then
    exec python manage.py "$@"
fi
if python -m parley.procfile --has "$role"; then
    # prometheus-client's multiprocess files of an earlier run of this container are stale.
    if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
        mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
        rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db
    fi
    exec python -m parley.procfile "$role" "$@"
fi
exec "$role" "$@"
