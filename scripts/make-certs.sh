#!/usr/bin/env bash
# Makes a private CA and certificates for the cluster's mutual TLS (openssl).
#
#   scripts/make-certs.sh DIR NAME...
#
# writes DIR/ca.pem (every node and client gets it: --tls-ca), DIR/ca-key.pem (the CA's
# key: keep it safe, it signs new members), and for each NAME DIR/NAME.pem and
# DIR/NAME-key.pem (--tls-cert and --tls-key). A NAME is a node (its certificate names
# the node, which must be its --name, and the host other nodes dial, e.g. the compose
# service name) or, if it starts with "client", a client: a client's certificate is
# good for client links only (extended key usage clientAuth), and a node refuses it as
# a member. Each certificate names NAME, localhost, 127.0.0.1 and ::1; add more with
# SAN="DNS:node1.example.com,IP:10.0.0.5", where {} stands for each NAME (for pods that
# others dial at NAME.SERVICE: SAN='DNS:{}.counter-peers,DNS:counter-peers'). An
# existing CA in DIR is reused, so running it again adds members to the same cluster.
# Keys are written readable by you only.
#
#   scripts/make-certs.sh certs coordinator worker-1 worker-2 client
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
command -v openssl >/dev/null || {
  echo "make-certs: openssl is not installed (Debian: apt-get install openssl)" >&2
  exit 1
}
dir=$1
shift
mkdir -p "$dir"
umask 077
days=825

for name in "$@"; do
  case "$name" in
    *[!A-Za-z0-9._-]*|'') echo "make-certs: '$name' is not a host name" >&2; exit 2 ;;
    ca|*-key) echo "make-certs: '$name' would overwrite the CA's or another member's files" >&2; exit 2 ;;
  esac
done

# openssl's chatter is shown only if it fails.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" >&2
    echo "make-certs: openssl failed" >&2
    exit 1
  fi
}

if [ -f "$dir/ca.pem" ] && [ ! -f "$dir/ca-key.pem" ]; then
  echo "make-certs: $dir/ca.pem exists but its key $dir/ca-key.pem does not: cannot sign" >&2
  exit 1
fi
if [ ! -f "$dir/ca.pem" ]; then
  quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -days "$days" \
    -subj "/CN=counter-cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
  chmod 644 "$dir/ca.pem"
  echo "make-certs: new CA in $dir/ca.pem" >&2
fi

for name in "$@"; do
  case "$name" in
    client*) usage=clientAuth ;;
    *) usage=serverAuth,clientAuth ;;
  esac
  ext=$(mktemp)
  trap 'rm -f "$ext" "$dir/$name.csr"' EXIT
  {
    san=${SAN:-}
    san=${san//\{\}/$name}
    printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1%s\n' "$name" "${san:+,$san}"
    printf 'basicConstraints=critical,CA:FALSE\n'
    printf 'keyUsage=critical,digitalSignature\n'
    printf 'extendedKeyUsage=%s\n' "$usage"
  } >"$ext"
  quiet openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/$name-key.pem" -out "$dir/$name.csr" -subj "/CN=$name"
  quiet openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
    -CAcreateserial -CAserial "$dir/ca.srl" -days "$days" -extfile "$ext" \
    -out "$dir/$name.pem"
  chmod 644 "$dir/$name.pem"
  rm -f "$ext" "$dir/$name.csr"
  trap - EXIT
  echo "make-certs: $dir/$name.pem and $dir/$name-key.pem" >&2
done
