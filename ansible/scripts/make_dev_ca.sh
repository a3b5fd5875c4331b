#!/usr/bin/env bash
# Development TLS material for the Kafka nodes: a CA and one certificate per node, signed by it.
#   scripts/make_dev_ca.sh ENV HOST...      e.g. scripts/make_dev_ca.sh dev kafka-1 kafka-2 kafka-3
# Writes files/tls/ENV/{ca.pem,ca.key,HOST.crt,HOST.key}. Each certificate has CN and DNS SAN
# HOST.$STREAMSIGHT_DNS_DOMAIN (default: internal), which is also the node's Kafka principal.
# Keeps an existing CA. Then encrypt the keys: ansible-vault encrypt files/tls/ENV/kafka-*.key
# and keep ca.key somewhere safe (not in git). For production use a real CA.
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 ENV HOST..." >&2; exit 2; }
env_name=$1; shift
domain=${STREAMSIGHT_DNS_DOMAIN:-internal}
days=${DAYS:-825}
dir="$(cd "$(dirname "$0")/.." && pwd)/files/tls/$env_name"
mkdir -p "$dir"
umask 077
if [[ ! -f "$dir/ca.pem" ]]; then
  openssl req -x509 -newkey rsa:4096 -sha256 -nodes -days 3650 \
    -subj "/CN=Streamsight $env_name CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
fi
for host in "$@"; do
  fqdn="$host.$domain"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$host.key"
  openssl req -new -key "$dir/$host.key" -subj "/CN=$fqdn" -out "$dir/$host.csr"
  openssl x509 -req -in "$dir/$host.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days "$days" -sha256 -out "$dir/$host.crt" \
    -extfile <(printf 'subjectAltName=DNS:%s,DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' "$fqdn" "$host")
  rm -f "$dir/$host.csr"
done
chmod 644 "$dir"/ca.pem "$dir"/*.crt
echo "wrote $dir: ca.pem $(printf '%s.crt/.key ' "$@")"
