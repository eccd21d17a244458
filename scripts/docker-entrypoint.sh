#!/bin/sh
# Container entry point: uses /etc/twigate/twigate.conf when one is mounted,
# otherwise the sample shipped in the image, then hands over to twigate as
# PID 1's child-free replacement (exec) so SIGTERM reaches it directly.
set -eu
conf=${TWIGATE_CONFIG:-/etc/twigate/twigate.conf}
[ -r "$conf" ] || conf=/etc/twigate/twigate.conf.sample
exec /usr/sbin/twigate --config "$conf" "$@"
