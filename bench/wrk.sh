#!/usr/bin/env bash
# Measures the paths the performance goals compare, with wrk on loopback:
#
#   direct    POST to the sum service itself
#   nginx     nginx as a plain reverse proxy (keep-alive upstream) in front of it
#   revproxy  net/http + httputil.ReverseProxy in front of it (in the loadtest process)
#   bare      net/http + a handler relaying with the library's pool (in the loadtest process)
#   server    POST to the nano server, which proxies to the sum service
#   act       POST to a service whose handler calls the sum service with Act
#   original  the original go-nano server in front of the same sum service
#             (only when ORIGINAL names a checkout of the original library)
#
# Every path first gets an unmeasured warm-up, then the rounds run
# interleaved: round 1 runs every path once, then round 2, and so on. The
# table shows per path the median req/s, p50 and p99 over the rounds, the
# median of the per-round ratios to direct and to nginx (so a drift of the
# machine between rounds cancels out), the errors of all rounds (failed
# connections, reads, writes, timeouts and answers outside 2xx) and the new
# connections per 1000 requests that the loadtest's server, sum, act,
# revproxy and bare listeners accepted during the measured runs, not
# counting the C+1 connections wrk itself opens to the path's front
# listener (it opens one first to test the address): 0.0 means every hop
# kept its connections alive. wrk stops with requests in flight; a proxy
# that closes the upstream connection of a request its client abandoned
# (httputil's ReverseProxy and the library's pool do) dials it again in
# the path's next run, which shows as a small figure in the sum column.
#
# The "cpu µs/req" column is the CPU time (user plus system, read from
# /proc/PID/stat in clock ticks just before and just after each measured
# run) that the processes serving the path spent per request, median over
# the rounds: the loadtest process for direct, revproxy, bare, server and
# act; nginx's master and workers plus the loadtest (which runs the sum
# service) for nginx; the original's server plus the loadtest for
# original. wrk's own CPU is not in it. The busier a server, the more
# requests each wakeup, read and write carries, so the figure falls as
# the rate rises: compare it between the paths of one run, not across
# runs or machines. Each reading is good to one clock tick (10 ms where
# CLK_TCK is 100).
#
#   bench/wrk.sh                               # 3 rounds of 5 s, 32 connections
#   ROUNDS=1 D=3s C=64 OUT=runs.txt bench/wrk.sh
#   ORIGINAL=../go-nano-original bench/wrk.sh  # adds the original's server
#   TRANSPORT=std bench/wrk.sh                 # server and services call through http.Transport
#   TLS=1 bench/wrk.sh                         # every hop over TLS: direct, nginx, server, act
#
# Environment: D (wrk duration, 5s), C (connections, 32), ROUNDS (3),
# WARMUP (unmeasured wrk run per path before round 1, 1s; 0 skips it),
# OUT (a file to write the raw per-round lines to), ORIGINAL (see above),
# TRANSPORT (pool, the library's default, or std: what carries the calls
# of the loadtest's server and services; the bare path always uses the
# pool), TLS (1: wrk speaks TLS to each path's front, and every hop behind
# it is TLS too: the loadtest's server and services, and nginx's upstream,
# kept alive with its TLS sessions reused, checking the sum service's
# certificate against the loadtest's CA; the revproxy, bare and original
# paths are left out).
#
# Needs Linux (for /proc), wrk, curl and Go; nginx is optional (apt-get
# install wrk nginx curl); the original path needs redis-server and the Go
# module proxy (to fetch the original's dependencies).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
D=${D:-5s} C=${C:-32} ROUNDS=${ROUNDS:-3} WARMUP=${WARMUP:-1s}
OUT=${OUT:-} ORIGINAL=${ORIGINAL:-} TRANSPORT=${TRANSPORT:-pool} TLS=${TLS:-}
lua=bench/post.lua

fail() {
  echo "wrk.sh: $*" >&2
  exit 1
}

for tool in wrk curl go; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || fail "ROUNDS must be a positive number, not '$ROUNDS'"
[[ $C =~ ^[1-9][0-9]*$ ]] || fail "C must be a positive number, not '$C'"
[[ -z $TLS || $TLS == 1 ]] || fail "TLS must be 1 or empty, not '$TLS'"
[[ -z $TLS || -z $ORIGINAL ]] || fail "the original's server has no TLS: give TLS or ORIGINAL, not both"
[[ -r /proc/self/stat ]] || fail "cannot read /proc/self/stat: the CPU figures need Linux's /proc"
clk_tck=$(getconf CLK_TCK)
[[ $clk_tck =~ ^[1-9][0-9]*$ ]] || fail "getconf CLK_TCK printed '$clk_tck', not a number of ticks per second"

work=$(mktemp -d "${TMPDIR:-/tmp}/nano-wrk.XXXXXX")
pids=()

# cleanup stops every process the script started, by its PID: politely
# first, then for good after 5 s.
cleanup() {
  local p
  trap - INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port prints a loopback port nobody listens on, below the kernel's
# range for outgoing connections.
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  fail "no free port found"
}

# wait_port waits until something listens on a loopback port; the process
# in $2 must stay alive meanwhile, its logs (the rest) are shown otherwise.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
    kill -0 "$2" 2>/dev/null || { cat "${@:3}" >&2; fail "a process for port $1 stopped early (log above)"; }
    sleep 0.1
  done
  fail "nothing listens on port $1 after 10 s"
}

# check fails loudly unless a path answers its message with 200.
check() {
  local name=$1 url=$2 body=$3 code
  for _ in $(seq 50); do
    code=$(curl -sS ${TLS:+--cacert "$work/tls/ca.crt"} -o "$work/answer" -w '%{http_code}' --max-time 5 -X POST \
      -H 'Content-Type: application/json' --data-binary "$body" "$url" 2>"$work/curl.err") || code=000
    [[ $code == 200 ]] && return
    sleep 0.1
  done
  cat "$work/curl.err" "$work/answer" >&2 2>/dev/null || true
  echo >&2
  fail "path $name ($url) answers $code, not 200"
}

declare -A url body
paths=()
notes=()
add_path() {
  url[$1]=$2
  body[$1]=$3
  paths+=("$1")
}

commit=unknown
if git rev-parse --git-dir >/dev/null 2>&1; then
  commit=$(git rev-parse --short HEAD)
  [[ -z $(git status --porcelain) ]] || commit+="+dirty"
fi

go build -o "$work/loadtest" ./_examples/loadtest
: >"$work/loadtest.out" # before the background job opens it, for the loop below
tls_args=()
scheme=http
if [[ -n $TLS ]]; then
  mkdir -p "$work/tls"
  tls_args=(-tls "$work/tls")
  scheme=https
fi
"$work/loadtest" -serve -transport "$TRANSPORT" "${tls_args[@]}" >"$work/loadtest.out" 2>"$work/loadtest.err" &
loadtest=$!
pids+=("$loadtest")
want_lines=5
[[ -z $TLS ]] || want_lines=3
for _ in $(seq 200); do
  [[ $(wc -l <"$work/loadtest.out") -ge $want_lines ]] && break
  kill -0 "$loadtest" 2>/dev/null || { cat "$work/loadtest.err" >&2; fail "the loadtest stopped early (log above)"; }
  sleep 0.1
done
[[ $(wc -l <"$work/loadtest.out") -ge $want_lines ]] || fail "the loadtest printed no URLs after 20 s"
served() { awk -v p="$1" -v f="$2" '$1 == p { print $f }' "$work/loadtest.out"; }
front_paths=(direct revproxy bare server act)
[[ -z $TLS ]] || front_paths=(direct server act)
for p in "${front_paths[@]}"; do
  [[ -n $(served "$p" 2) ]] || fail "the loadtest printed no URL for $p"
done
sum_port=$(served direct 2 | sed -E 's|^https?://127\.0\.0\.1:([0-9]+)/$|\1|')
[[ $sum_port =~ ^[0-9]+$ ]] || fail "cannot read the sum service's port from $(served direct 2)"
sum_msg=$(served direct 3)

add_path direct "$(served direct 2)" "$sum_msg"

if command -v nginx >/dev/null; then
  port=$(free_port)
  ngx=$work/nginx
  mkdir -p "$ngx"
  cat >"$ngx/nginx.conf" <<CONF
worker_processes auto;
pid $ngx/nginx.pid;
error_log $ngx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $ngx/body;
  proxy_temp_path $ngx/proxy;
  fastcgi_temp_path $ngx/fastcgi;
  uwsgi_temp_path $ngx/uwsgi;
  scgi_temp_path $ngx/scgi;
  keepalive_requests 1000000;
  upstream sum { server 127.0.0.1:$sum_port; keepalive 64; keepalive_requests 1000000; }
  server {
$(if [[ -n $TLS ]]; then cat <<TLSCONF
    listen 127.0.0.1:$port ssl;
    ssl_certificate $work/tls/tls.crt;
    ssl_certificate_key $work/tls/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass https://sum; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_verify on; proxy_ssl_trusted_certificate $work/tls/ca.crt;
      proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
    }
TLSCONF
else cat <<PLAINCONF
    listen 127.0.0.1:$port;
    location / { proxy_pass http://sum; proxy_http_version 1.1; proxy_set_header Connection ""; }
PLAINCONF
fi)
  }
}
CONF
  nginx -e "$ngx/error.log" -p "$ngx" -c "$ngx/nginx.conf" 2>"$ngx/stderr" &
  nginx_pid=$!
  pids+=("$nginx_pid")
  wait_port "$port" "$nginx_pid" "$ngx/stderr" "$ngx/error.log"
  add_path nginx "$scheme://127.0.0.1:$port/" "$sum_msg"
else
  notes+=("nginx: skipped, nginx is not installed (apt-get install nginx)")
fi

if [[ -z $TLS ]]; then
  add_path revproxy "$(served revproxy 2)" "$(served revproxy 3)"
  add_path bare "$(served bare 2)" "$(served bare 3)"
fi
add_path server "$(served server 2)" "$(served server 3)"
add_path act "$(served act 2)" "$(served act 3)"

# The original library's server: its compatibility program built against
# the checkout in ORIGINAL, outside this tree, with its own redis-server.
# It listens on every interface (its Listen takes only a port); all traffic
# here stays on loopback.
if [[ -n $TLS ]]; then
  notes+=("original: skipped, it has no TLS")
elif [[ -n $ORIGINAL ]]; then
  command -v redis-server >/dev/null || fail "ORIGINAL is set but redis-server is not installed"
  ORIGINAL=$(cd "$ORIGINAL" && pwd) || fail "ORIGINAL: no such directory"
  grep -q '^module github.com/domWinter/go-nano$' "$ORIGINAL/go.mod" 2>/dev/null ||
    fail "ORIGINAL ($ORIGINAL) is not a checkout of github.com/domWinter/go-nano"

  redis_port=$(free_port)
  mkdir -p "$work/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$work/redis" --save '' \
    --appendonly no --daemonize no --logfile "$work/redis/log" &
  pids+=("$!")
  wait_port "$redis_port" "$!" "$work/redis/log"

  orig_port=$(free_port)
  build=$work/original
  mkdir -p "$build"
  sed -e "s/\"127\.0\.0\.1:6379\"/\"127.0.0.1:$redis_port\"/" -e "s/, 9999)/, $orig_port)/" \
    testdata/compat/server/main.go >"$build/main.go"
  if ! grep -q "\"127.0.0.1:$redis_port\"" "$build/main.go" || ! grep -q ", $orig_port)" "$build/main.go"; then
    fail "testdata/compat/server/main.go changed: cannot point it at the script's Redis and port"
  fi
  cat >"$build/go.mod" <<MOD
module original-server

go 1.21

require github.com/domWinter/go-nano v0.0.0

replace github.com/domWinter/go-nano => $ORIGINAL
MOD
  (cd "$build" && GOWORK=off go mod tidy 2>"$build/tidy.log" && GOWORK=off go build -o server .) ||
    { cat "$build/tidy.log" >&2; fail "cannot build the original's server"; }
  "$build/server" >"$build/log" 2>&1 &
  original_pid=$!
  pids+=("$original_pid")
  wait_port "$orig_port" "$original_pid" "$build/log"
  registration="{\"Pattern\":\"role:math,cmd:sum\",\"ServiceAddress\":\"127.0.0.1:$sum_port\",\"ServicePort\":$sum_port,\"ServerAddress\":\"127.0.0.1\",\"ServerPort\":$orig_port}"
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
    -H 'Content-Type: application/json' --data-binary "$registration" \
    "http://127.0.0.1:$orig_port/register") || code=000
  [[ $code == 200 ]] || { cat "$build/log" >&2; fail "registering the sum service at the original's server answers $code"; }
  add_path original "http://127.0.0.1:$orig_port/" "$sum_msg"
else
  notes+=("original: skipped, set ORIGINAL to a checkout of the original go-nano library to measure it")
fi

for p in "${paths[@]}"; do check "$p" "${url[$p]}" "${body[$p]}"; done

# children prints the PIDs of the processes whose parent is $1.
children() {
  local s line f
  for s in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$s" || continue
    line=${line##*) }
    read -ra f <<<"$line"
    [[ ${f[1]} == "$1" ]] && echo "${s//[^0-9]/}"
  done
  return 0
}

# serving holds per path the PIDs of the processes that serve it, whose
# CPU time measure counts. nginx's workers are looked up once, now that
# they have answered.
declare -A serving
for p in "${paths[@]}"; do
  case $p in
    nginx)
      mapfile -t workers < <(children "$nginx_pid")
      [[ ${#workers[@]} -gt 0 ]] || fail "nginx ($nginx_pid) has no worker processes"
      serving[$p]="$nginx_pid ${workers[*]} $loadtest"
      ;;
    original) serving[$p]="$original_pid $loadtest" ;;
    *) serving[$p]=$loadtest ;;
  esac
done

# cpu_ticks prints the CPU time, user plus system in clock ticks, that the
# processes with the PIDs in its arguments have used so far.
cpu_ticks() {
  local p line f total=0
  for p in "$@"; do
    read -r line 2>/dev/null <"/proc/$p/stat" || fail "process $p, which serves a path, has stopped"
    line=${line##*) }
    read -ra f <<<"$line" # f[0] is field 3 of stat, the state
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# accepted asks the loadtest for the connections its listeners accepted so
# far and prints them as "server sum act revproxy bare".
accepted() {
  local n line
  n=$(grep -c '^accepted ' "$work/loadtest.out" || true)
  kill -USR1 "$loadtest" 2>/dev/null || fail "the loadtest has stopped"
  for _ in $(seq 500); do
    line=$(grep '^accepted ' "$work/loadtest.out" | sed -n "$((n + 1))p")
    if [[ -n $line ]]; then
      awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); c[kv[1]] = kv[2] }
             print c["server"] + 0, c["sum"] + 0, c["act"] + 0, c["revproxy"] + 0, c["bare"] + 0 }' <<<"$line"
      return
    fi
    sleep 0.01
  done
  fail "the loadtest did not report its connection counts"
}

# measure runs wrk once on a path and prints its RESULT figures followed by
# the CPU time of the processes serving the path (cpu_ticks, and
# cpu_us_per_req, "-" without requests) and the new connections of the
# server, sum, act, revproxy and bare listeners.
measure() {
  local p=$1 d=$2 counts before after out result front procs cpu0 cpu1 cpu
  read -ra procs <<<"${serving[$p]}"
  counts=$(accepted)
  read -ra before <<<"$counts"
  cpu0=$(cpu_ticks "${procs[@]}")
  out=$(BODY=${body[$p]} wrk -t1 -c"$C" -d"$d" -s "$lua" "${url[$p]}" 2>&1) ||
    { echo "$out" >&2; fail "wrk failed on $p"; }
  cpu1=$(cpu_ticks "${procs[@]}")
  counts=$(accepted)
  read -ra after <<<"$counts"
  result=$(grep '^RESULT ' <<<"$out") || { echo "$out" >&2; fail "wrk printed no RESULT line for $p"; }
  cpu=$(awk -v t=$((cpu1 - cpu0)) -v hz="$clk_tck" '{
          for (i = 2; i <= NF; i++) if ($i ~ /^requests=/) n = substr($i, 10) + 0
          printf "cpu_ticks=%d cpu_us_per_req=%s", t, (n > 0 ? sprintf("%.1f", t * 1e6 / hz / n) : "-")
        }' <<<"$result")
  case $p in
    server) front=0 ;;
    direct) front=1 ;;
    act) front=2 ;;
    revproxy) front=3 ;;
    bare) front=4 ;;
    *) front=-1 ;;
  esac
  local new=() i names=(server sum act revproxy bare)
  for i in "${!names[@]}"; do
    new[i]=$((after[i] - before[i]))
    ((i == front)) && new[i]=$((new[i] - C - 1))
    new[i]="new_${names[i]}=${new[i]}"
  done
  echo "${result#RESULT } $cpu ${new[*]}"
}

header=(
  "date     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  "commit   $commit"
  "go       $(go version)"
  "nproc    $(nproc)"
  "calls    $TRANSPORT (what the loadtest's server and services send through)"
  "tls      $(if [[ -n $TLS ]]; then echo "every hop (wrk to the front, and every proxy and service behind it)"; else echo none; fi)"
  "cpu      user+system time of the processes serving each path, from /proc/PID/stat at $clk_tck ticks/s"
  "wrk      BODY=<message> wrk -t1 -c$C -d$D -s $lua <url>; $ROUNDS round(s), interleaved, after a $WARMUP warm-up per path"
)
printf '%s\n' "${header[@]}"
[[ ${#notes[@]} -eq 0 ]] || printf 'note     %s\n' "${notes[@]}"
if [[ -n $OUT ]]; then
  : >"$OUT"
  printf '# %s\n' "${header[@]}" >>"$OUT"
fi

if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
  for p in "${paths[@]}"; do measure "$p" "$WARMUP" >/dev/null; done
fi
for r in $(seq "$ROUNDS"); do
  for p in "${paths[@]}"; do
    # measure runs in this shell, not in $(...), so that Ctrl-C during wrk
    # reaches the INT trap as soon as wrk has stopped.
    measure "$p" "$D" >"$work/line"
    line="round=$r path=$p $(<"$work/line")"
    echo "$line" >>"$work/results"
    [[ -z $OUT ]] || echo "$line" >>"$OUT"
  done
done
echo

awk -v rounds="$ROUNDS" '
  BEGIN { nnames = split("server sum act revproxy bare", names, " ") }
  {
    split("", f)
    for (i = 1; i <= NF; i++) { eq = index($i, "="); f[substr($i, 1, eq - 1)] = substr($i, eq + 1) }
    p = f["path"]; r = f["round"]
    if (!(p in seen)) { seen[p] = 1; order[++n] = p }
    rps[p, r] = f["rps"]
    p50[p] = p50[p] " " f["p50_us"]; p99[p] = p99[p] " " f["p99_us"]; all[p] = all[p] " " f["rps"]
    errors[p] += f["err_connect"] + f["err_read"] + f["err_write"] + f["err_timeout"] + f["non2xx"]
    requests[p] += f["requests"]
    if (f["cpu_us_per_req"] != "-") cpu[p] = cpu[p] " " f["cpu_us_per_req"]
    for (i = 1; i <= nnames; i++) conns[p, i] += f["new_" names[i]]
  }
  function median(list,   a, k, i, j, t) {
    k = split(list, a, " ")
    if (k == 0) return ""
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  function ratio(p, base,   r, list) {
    if (!(base in seen)) return "-"
    list = ""
    for (r = 1; r <= rounds; r++) if (((p, r) in rps) && ((base, r) in rps) && rps[base, r] > 0) list = list " " rps[p, r] / rps[base, r]
    return list == "" ? "-" : sprintf("%.2fx", median(list))
  }
  END {
    # "cpu µs/req" is spelled out: awk pads by bytes or by characters,
    # depending on the awk and the locale.
    printf "%-9s %9s %8s %8s %10s %9s cpu µs/req %7s  %s\n", "path", "req/s", "p50 ms", "p99 ms", "vs direct", "vs nginx", "errors", "new conns/1k req (server/sum/act/revproxy/bare)"
    for (i = 1; i <= n; i++) {
      p = order[i]
      c = ""
      for (j = 1; j <= nnames; j++) c = c (j > 1 ? "/" : "") sprintf("%.1f", requests[p] ? conns[p, j] * 1000 / requests[p] : 0)
      u = cpu[p] == "" ? "-" : sprintf("%.1f", median(cpu[p]))
      printf "%-9s %9.0f %8.2f %8.2f %10s %9s %10s %7d  %s\n", p, median(all[p]), median(p50[p]) / 1000, median(p99[p]) / 1000, ratio(p, "direct"), ratio(p, "nginx"), u, errors[p], c
    }
    for (i = 1; i <= n; i++) if (errors[order[i]] > 0) printf "warning: %s had %d error(s); see the raw lines (OUT) for their kinds\n", order[i], errors[order[i]]
  }' "$work/results"
