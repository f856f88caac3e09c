#!/usr/bin/env bash
# A throw-away certificate authority and a server certificate for localhost, 127.0.0.1 and ::1,
# for HTTPS on a developer's machine: the compose stack's nginx (port 8443) or the binary's own
# `server.tls`. Never for production.
#
#   scripts/dev-cert.sh [DIR]   # default deploy/dev-certs: ca.pem (trust this), ca.key,
#                               # cert.pem and key.pem (the server's)
#   curl --cacert deploy/dev-certs/ca.pem https://localhost:8443/healthz
set -euo pipefail

dir=${1:-$(cd "$(dirname "$0")/.." && pwd)/deploy/dev-certs}
mkdir -p "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)

openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=Portcullis development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj "/CN=localhost" -keyout "$dir/key.pem" -out "$dir/server.csr" 2>/dev/null
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 30 -out "$dir/cert.pem" 2>/dev/null -extfile <(printf '%s\n' \
    "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth")
rm -f "$dir/server.csr" "$dir/ca.srl"
chmod 600 "$dir/ca.key" "$dir/key.pem"
echo "$dir"
