#!/bin/sh
# Container entry point: uses /etc/twigate/twigate.conf when one is mounted,
# otherwise the sample shipped in the image, then hands over to twigate as
# PID 1's child-free replacement (exec) so SIGTERM reaches it directly.
set -eu
if [ -n "${TWIGATE_CONFIG:-}" ]; then
    # An explicit config that cannot be read is an error, never a silent
    # fall-back to the demo sample (which has a public demo token).
    [ -r "$TWIGATE_CONFIG" ] || { echo "twigate: TWIGATE_CONFIG=$TWIGATE_CONFIG is not readable" >&2; exit 2; }
    conf=$TWIGATE_CONFIG
else
    conf=/etc/twigate/twigate.conf
    [ -r "$conf" ] || conf=/etc/twigate/twigate.conf.sample
fi
exec /usr/sbin/twigate --config "$conf" "$@"
