#!/bin/sh
# Roles of the Parley image:
#   web      daphne on 0.0.0.0:$PORT (run `migrate` first, once per release)
#   worker   a Celery worker with the beat scheduler (run exactly one with beat)
#   migrate  apply database migrations and exit
#   manage   any manage.py command, e.g. `manage createsuperuser`
# Anything else is executed as given.
set -eu

role="${1:-web}"
[ $# -gt 0 ] && shift

case "$role" in
    web)
        exec python -m parley.serve -b 0.0.0.0 -p "${PORT:-8000}" --proxy-headers "$@" parley.asgi:application
        ;;
    worker)
        exec celery -A parley worker -B -l "${CELERY_LOG_LEVEL:-info}" \
            --concurrency "${CELERY_CONCURRENCY:-2}" --without-gossip --without-mingle \
            -s "${PARLEY_VAR_DIR:-/var/lib/parley}/celerybeat-schedule" "$@"
        ;;
    migrate)
        exec python manage.py migrate --noinput "$@"
        ;;
    manage)
        exec python manage.py "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
