#!/usr/bin/env bash
# A development CA and server certificates for docker-compose.tls.yml:
#   ops/tls/make-dev-certs.sh [DIR]        (default ops/tls/certs, ignored by git)
# Writes ca.pem (give it to the services as AMQP_CA_FILE / REDIS_CA_FILE) and one
# certificate + key per server, named for the compose host names: rabbitmq.pem,
# rabbitmq-key.pem, redis.pem, redis-key.pem (each also valid for localhost).
# For production, use certificates from your own CA instead; nothing else changes.
set -euo pipefail
dir="${1:-$(dirname "$0")/certs}"
days="${WARMLANE_CERT_DAYS:-825}"
command -v openssl >/dev/null || { echo "error: openssl is needed" >&2; exit 2; }
mkdir -p "$dir"
cd "$dir"
for f in ca.pem rabbitmq.pem rabbitmq-key.pem redis.pem redis-key.pem; do
  if [ -d "$f" ]; then
    echo "error: $dir/$f is a directory (docker compose made it when the file was missing); remove it and run again" >&2
    exit 2
  fi
done
if [ ! -f ca.pem ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days "$days" -subj "/CN=warmlane dev CA" \
    -keyout ca-key.pem -out ca.pem 2>/dev/null
fi
for host in rabbitmq redis; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$host" -keyout "$host-key.pem" -out "$host.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$host" > "$host.ext"
  openssl x509 -req -in "$host.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
    -extfile "$host.ext" -out "$host.pem" 2>/dev/null
  rm -f "$host.csr" "$host.ext"
done
# The broker and Redis run as their own users in their containers: they must read
# the keys. Keep this directory private to the host's operators.
chmod 0644 ./*-key.pem
chmod 0600 ca-key.pem
echo "certificates in $dir: ca.pem, rabbitmq.pem, redis.pem (and their keys)"
