#!/bin/sh
# A WebSocket echo server for one connection on stdin/stdout, with busybox alone (`nc -ll -e` runs it
# per connection): the RFC 6455 handshake, then every text or binary frame comes back, unmasked as a
# server's frames are; a close frame is answered and ends the connection. Payloads up to 65535 bytes.
GUID=258EAFA5-E914-47DA-95CA-C5AB0DC85B11
CR=$(printf '\r')
key=""
while IFS= read -r line; do
  line="${line%"$CR"}"
  [ -z "$line" ] && break
  case "$line" in
    [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key="${line#*:}"; key="${key# }" ;;
  esac
done
[ -n "$key" ] || { printf 'HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'; exit 0; }
accept=$(printf '%s' "$key$GUID" | sha1sum | cut -d' ' -f1 | xxd -r -p | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$accept"

# The next N bytes of the connection as decimal numbers.
bytes() { dd bs=1 count="$1" 2>/dev/null | od -An -v -tu1; }
# Writes the bytes given as decimal numbers.
emit() { for b in "$@"; do printf "\\$(printf %o "$b")"; done; }

while :; do
  set -- $(bytes 2)
  [ $# -eq 2 ] || exit 0
  opcode=$(($1 & 15))
  length=$(($2 & 127))
  if [ "$length" -eq 126 ]; then
    set -- $(bytes 2)
    length=$(($1 * 256 + $2))
  elif [ "$length" -eq 127 ]; then
    exit 1
  fi
  mask=$(bytes 4)
  payload=""
  [ "$length" -gt 0 ] && payload=$(bytes "$length")
  if [ "$opcode" -eq 8 ]; then
    emit 136 0
    exit 0
  fi
  set -- $mask
  m0=$1 m1=$2 m2=$3 m3=$4
  if [ "$length" -lt 126 ]; then emit $((128 | opcode)) "$length"; else emit $((128 | opcode)) 126 $((length / 256)) $((length % 256)); fi
  i=0
  out=""
  for b in $payload; do
    case $((i % 4)) in 0) m=$m0 ;; 1) m=$m1 ;; 2) m=$m2 ;; *) m=$m3 ;; esac
    out="$out $((b ^ m))"
    i=$((i + 1))
  done
  # shellcheck disable=SC2086
  emit $out
done
