#!/usr/bin/env bash
# Measures go-nano with wrk, next to nginx as a plain reverse proxy when
# nginx is installed: the paths run back to back, ROUNDS times, and the
# medians are printed with each path's ratio to the direct one.
#
#   bench/wrk.sh                    # 3 rounds of 10 s, 32 connections
#   ROUNDS=1 D=5s C=64 bench/wrk.sh
#
# Needs wrk (apt-get install wrk); nginx is optional (apt-get install nginx).
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-10s} C=${C:-32} ROUNDS=${ROUNDS:-3}
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/loadtest" ./_examples/loadtest
"$work/loadtest" -serve > "$work/urls" &
pids+=($!)
for _ in $(seq 100); do [[ $(wc -l < "$work/urls") -ge 3 ]] && break; sleep 0.1; done
url() { awk -v p="$1" '$1 == p {print $2}' "$work/urls"; }
body() { awk -v p="$1" '$1 == p {print $3}' "$work/urls"; }
paths=(direct server act)

if command -v nginx >/dev/null; then
  upstream=$(url direct | sed -E 's|http://127.0.0.1:([0-9]+)/|\1|')
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)
  mkdir -p "$work/nginx"
  cat > "$work/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  keepalive_requests 1000000;
  upstream service { server 127.0.0.1:$upstream; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$port;
    location / { proxy_pass http://service; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
  nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
  pids+=($!)
  sleep 0.5
  echo "nginx $(url direct | sed "s|:$upstream/|:$port/|") $(body direct)" >> "$work/urls"
  paths+=(nginx)
fi

echo "wrk -t1 -c$C -d$D, $ROUNDS round(s); $(nproc) cores"
for r in $(seq "$ROUNDS"); do
  for p in "${paths[@]}"; do
    BODY=$(body "$p") wrk -t1 -c"$C" -d"$D" -s bench/post.lua "$(url "$p")" | awk -v p="$p" -v r="$r" '/^RESULT/ {print p, r, $2, $3, $4, $5}' >> "$work/results"
  done
done

awk '
  { rps[$1] = rps[$1] " " $3; p50[$1] = p50[$1] " " $4; p99[$1] = p99[$1] " " $5; err[$1] += $6
    if ($2 == 1) order[++n] = $1 }
  function median(list,   a, k, i, j, t) {
    k = split(list, a, " ")
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return a[int((k + 1) / 2)]
  }
  END {
    printf "%-7s %10s %9s %9s %10s %7s\n", "path", "req/s", "p50 ms", "p99 ms", "vs direct", "errors"
    d = median(rps["direct"])
    for (i = 1; i <= n; i++) {
      p = order[i]
      printf "%-7s %10.0f %9.2f %9.2f %9.2fx %7d\n", p, median(rps[p]), median(p50[p]) / 1000, median(p99[p]) / 1000, median(rps[p]) / d, err[p]
    }
  }' "$work/results"
