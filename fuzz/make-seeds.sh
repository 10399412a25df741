#!/usr/bin/env bash
# Regenerates the seed corpora under fuzz/corpus/ from real data: blocks, CARs and IPNS records
# made by Kubo (`ipfs` on PATH, run offline in a throwaway repository), OCI and Docker manifests of
# the shapes registries serve, requests of the kinds the conformance suites send. The committed
# corpora are this script's output; the fuzzer adds to them locally (fuzz/corpus is not where it
# writes new inputs: scripts/fuzz.sh gives it a scratch folder first).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="${GOBIN:-$HOME/go/bin}:$PATH"
export IPFS_PATH=$(mktemp -d)
trap 'rm -rf "$IPFS_PATH"' EXIT
ipfs init --profile test -e >/dev/null
C=corpus
rm -rf "$C"; mkdir -p "$C"/{manifest,names,digest,range,dag_pb,car,gateway_path,credentials,config,bitswap,ipns_record}
seed() { printf '%b' "$2" > "$C/$1/$(printf '%b' "$2" | sha1sum | cut -c1-16)"; }
seedfile() { cp "$2" "$C/$1/$(sha1sum < "$2" | cut -c1-16)"; }

# Kubo's blocks and CARs: a small file, a chunked file, a directory, a HAMT-sharded directory, a
# symlink, raw leaves, DAG-CBOR and DAG-JSON with links.
work=$(mktemp -d); trap 'rm -rf "$IPFS_PATH" "$work"' EXIT
printf 'hello fuzz\n' > "$work/small"
head -c 600000 /dev/urandom > "$work/big"
mkdir -p "$work/dir/sub"; printf a > "$work/dir/a.txt"; printf b > "$work/dir/sub/b"; ln -s a.txt "$work/dir/link"
mkdir -p "$work/wide"; for i in $(seq 1 300); do printf "$i" > "$work/wide/f$i"; done
roots=()
roots+=("$(ipfs add -Q "$work/small")")
roots+=("$(ipfs add -Q --chunker=size-65536 "$work/big")")
roots+=("$(ipfs add -Q --raw-leaves --cid-version=1 "$work/big")")
roots+=("$(ipfs add -Q -r "$work/dir")")
roots+=("$(ipfs add -Q -r --cid-version=1 "$work/wide")")
roots+=("$(ipfs add -Q --hash=blake2b-256 --cid-version=1 "$work/small")")
cbor=$(echo '{"a":{"/":"'"${roots[0]}"'"},"n":[1,2.5,"x",null,true]}' | ipfs dag put --input-codec=dag-json --store-codec=dag-cbor)
json=$(echo '{"link":{"/":"'"$cbor"'"},"bytes":{"/":{"bytes":"aGVsbG8"}}}' | ipfs dag put --input-codec=dag-json --store-codec=dag-json)
roots+=("$cbor" "$json")
codec_byte() { # the dag_pb target's first byte picks the CID's codec: 0 dag-pb, 1 raw, 2 dag-cbor, 3 dag-json
  case "$(ipfs cid format -f '%c' "$1")" in dag-pb) echo 0;; raw) echo 1;; dag-cbor) echo 2;; dag-json) echo 3;; *) echo 4;; esac
}
n=0
for r in "${roots[@]}"; do
  ipfs dag export "$r" > "$work/$n.car" 2>/dev/null
  # The car target's first byte is a chunk size.
  { printf '\x3f'; cat "$work/$n.car"; } > "$work/$n.seed"; seedfile car "$work/$n.seed"
  for b in $(ipfs refs -r -u "$r" | head -6) "$r"; do
    ipfs block get "$b" > "$work/blk"
    [ "$(stat -c %s "$work/blk")" -le 70000 ] || continue
    { printf "\\x0$(codec_byte "$b")"; cat "$work/blk"; } > "$work/blk.seed"; seedfile dag_pb "$work/blk.seed"
  done
  seed gateway_path "$r"
  seed gateway_path "$r/sub/b"
  n=$((n+1))
done
seed gateway_path "$(ipfs cid base32 "${roots[0]}")/a%20b/c"
seed gateway_path "bafkqaddjnzzxazldoqqhk4tjnrzxaidp"
seed gateway_path "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8"
seed gateway_path "12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d"
seed gateway_path "sha2-256"; seed gateway_path "blake2b-256"; seed gateway_path "dag-cbor"

# IPNS records (V1+V2, signed by Ed25519 and RSA keys), each after its name: the ipns_record
# target's first byte is the name's length.
ipfs key gen --type=rsa --size=2048 rsakey >/dev/null
gw=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
ipfs config Addresses.API /ip4/127.0.0.1/tcp/0 && ipfs config Addresses.Gateway "/ip4/127.0.0.1/tcp/$gw"
ipfs daemon --offline >/dev/null 2>&1 & daemon=$!
trap 'kill $daemon 2>/dev/null; rm -rf "$IPFS_PATH" "$work"' EXIT
for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$gw/" >/dev/null 2>&1 && break; sleep 0.1; done
for key in self rsakey; do
  name=$(ipfs key list -l --ipns-base=base36 | awk -v k="$key" '$2==k {print $1}')
  ipfs name publish --allow-offline --key="$key" --lifetime=8760h "/ipfs/${roots[0]}" >/dev/null
  # Kubo hands out its own record through its gateway (its routing commands need to be online).
  curl -sf "http://127.0.0.1:$gw/ipns/$name?format=ipns-record" > "$work/rec"
  { printf "\\x$(printf %02x ${#name})%s" "$name"; cat "$work/rec"; } > "$work/rec.seed"; seedfile ipns_record "$work/rec.seed"
done
kill $daemon; wait $daemon 2>/dev/null || true

# Manifests of the shapes registries serve; the first byte picks the Content-Type.
cfg="sha256:$(printf 'config' | sha256sum | cut -c1-64)"; l1="sha256:$(printf 'layer1' | sha256sum | cut -c1-64)"
seed manifest '\x00{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'$cfg'","size":1470},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"'$l1'","size":2811969}],"annotations":{"org.opencontainers.image.created":"2026-01-01T00:00:00Z"}}'
seed manifest '\x01{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"'$l1'","size":528,"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"'$cfg'","size":528,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}'
seed manifest '\x02{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1457,"digest":"'$cfg'"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":2812,"digest":"'$l1'"}]}'
seed manifest '\x03{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"'$l1'","platform":{"architecture":"amd64","os":"linux"}}]}'
seed manifest '\x00{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example+type","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"'$l1'","size":528}}'

for s in library/alpine a/b/c my-org/app.v2 a__b a--b x "" A/b a//b ../x a/. "$(printf 'a%.0s' $(seq 1 256))" \
    'alpine:3.20' 'a/b@sha256:'${l1#sha256:} 'a/b:' 'library/alpine/blobs/uploads/' 'a/manifests/latest' \
    'a/blobs/'$l1 'a/tags/list' 'a/referrers/'$l1 '_catalog' 'a/blobs/uploads/0b1c-uuid'; do
  seed names "$s"
done
for s in "$l1" "sha512:$(printf x | sha512sum | cut -c1-128)" "sha256:ABC" "sha256:" "md5:abc" "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564"; do seed digest "$s"; done
for s in 'bytes=0-0' 'bytes=0-' 'bytes=-1' 'bytes=10-5' 'bytes=0-1,2-3' 'bytes=-0' ' bytes=18446744073709551615-' '0-1023' 'bytes 0-1023/2048' 'bytes=99999999999999999999-'; do
  seed range '\x00\x20\x00\x00\x00\x00\x00\x00'"$s"
done

# Credentials: Basic (password, token), Bearer (a real-shaped JWT), scopes, passwords.
b64() { printf '%s' "$1" | base64 -w0; }
seed credentials '\x00Basic '"$(b64 'alice:correct horse')"
seed credentials '\x00Basic '"$(b64 'ci:afr_0123456789abcdef_0123456789abcdef0123456789abcdef0123456789abcdef')"
seed credentials '\x00Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJhZi1yZWdpc3RyeSIsInN1YiI6ImFsaWNlIn0.c2lnbmF0dXJl'
seed credentials '\x01{"iss":"af-registry","sub":"alice","aud":"af-registry","exp":4102444800,"nbf":0,"iat":0,"jti":"x","access":[{"type":"repository","name":"alice/app","actions":["pull","push"]}],"cap":"write","uid":"u1","tid":"t1"}'
seed credentials '\x01{"iss":"af-registry","sub":"","aud":"af-registry","exp":4102444800,"nbf":0,"iat":0,"jti":"x","access":[{"type":"registry","name":"catalog","actions":["*"]}],"cap":"read"}'
seed credentials '\x02repository:alice/app:pull,push'
seed credentials '\x02registry:catalog:*'

seed config 'data-dir = "/var/lib/af"\nlisten = "0.0.0.0:5000"\ngateway-listen = "0.0.0.0:8080"\nrpc-listen = "127.0.0.1:5001"\nmetadata-url = "postgres://af@db/af"\nmax-uploads = 64\noffline = false\ntrusted-peer = ["12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d"]\nupload-expiry = "24h"\n'
seed config 'public-url = "https://registry.example.com"\ngateway-domain = "example.com"\ndns-resolver = "127.0.0.1:53"\n[unknown]\nx = 1\n'

# Bitswap: length-prefixed protobuf messages, written by python (the protobuf wire format).
python3 - "$C/bitswap" "${roots[0]}" "$(ipfs cid format -v 1 -b base32 "${roots[0]}")" <<'PY'
import hashlib, os, sys, base64
out = sys.argv[1]
def varint(n):
    b = bytearray()
    while True:
        x = n & 0x7f; n >>= 7
        if n: b.append(x | 0x80)
        else: b.append(x); return bytes(b)
def field(num, wire, payload):
    key = varint(num << 3 | wire)
    return key + (varint(payload) if wire == 0 else varint(len(payload)) + payload)
def b58decode(s):
    alphabet = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'
    n = 0
    for c in s: n = n * 58 + alphabet.index(c)
    return n.to_bytes(34, 'big')
v0 = b58decode(sys.argv[2])
v1 = b'\x01\x70' + v0
entry = lambda cid, want, dont: field(1, 2, cid) + field(2, 0, 1) + field(4, 0, want) + field(5, 0, dont)
data = b'hello fuzz\n'
raw = b'\x01\x55\x12\x20' + hashlib.sha256(data).digest()
msgs = [
    field(1, 2, field(1, 2, entry(v0, 0, 1)) + field(1, 2, entry(v1, 1, 1)) + field(2, 0, 1)),
    field(1, 2, field(1, 2, field(1, 2, v1) + field(3, 0, 1))),
    field(3, 2, field(1, 2, bytes([1, 0x55, 0x12, 0x20])) + field(2, 2, data)) + field(5, 0, 10),
    field(4, 2, field(1, 2, raw) + field(2, 0, 1)),
    field(2, 2, data),
]
for i, m in enumerate(msgs):
    with open(os.path.join(out, f'msg{i}'), 'wb') as f:
        f.write(varint(len(m)) + m)
with open(os.path.join(out, 'stream'), 'wb') as f:
    for m in msgs: f.write(varint(len(m)) + m)
PY
echo "seeds: $(find "$C" -type f | wc -l) files in $(ls "$C" | wc -l) corpora"
