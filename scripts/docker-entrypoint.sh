#!/bin/sh
# The image's entrypoint. The registrator reads the Docker socket, which only root (or the docker group, whose id
# differs per host) may open: it keeps root, as gliderlabs/registrator's image does, so that a `docker run` line
# written for gliderlabs works with only the image name changed. Every other command (serve, nginx, doctor, dev)
# runs as the unprivileged `node` user.
set -e
case "${1:-}" in
  registrator | -* | consul://* | consul-tls://* | consul-unix://* | etcd://* | etcd2://* | skydns2://* | zookeeper://* | consulkv://*)
    exec consul-lb "$@"
    ;;
esac
# -h / --help / -V / --version (a leading dash) run as root above: they only print.
exec setpriv --reuid="${CONSUL_LB_USER:-node}" --regid="${CONSUL_LB_USER:-node}" --init-groups consul-lb "$@"
