#!/bin/sh
# HAProxy for Ray Serve's HAProxy ingress, with its stats page and Prometheus exporter on loopback.
#
# Ray 2.60 writes HAProxy's config from a fixed template that binds those two listeners on every
# interface ("bind *:<stats port>", "bind :<metrics port>"), with no setting to change it. Serve
# starts HAProxy as `<this script> -db -f <config> ...` (RAY_SERVE_HAPROXY_BINARY_PATH): the
# script rebinds both listeners to 127.0.0.1 in that config, then becomes the real HAProxy
# ($RAYESTATE_HAPROXY_BINARY, set by rayestate.localstack.haproxy_ingress_env). The API's own
# frontend keeps the host Serve gives it (127.0.0.1 locally).
set -eu
config=""
previous=""
for arg in "$@"; do
    if [ "$previous" = "-f" ]; then config="$arg"; fi
    previous="$arg"
done
if [ -n "$config" ]; then
    sed -i -e 's/^\([[:space:]]*bind[[:space:]]\{1,\}\)\*:/\1127.0.0.1:/' \
           -e 's/^\([[:space:]]*bind[[:space:]]\{1,\}\):/\1127.0.0.1:/' "$config"
fi
exec "${RAYESTATE_HAPROXY_BINARY:?RAYESTATE_HAPROXY_BINARY names the real haproxy}" "$@"
