# Sourced by bench/frontend/run and bench/frontend/ab (not run on its own): the
# ports (CARPOOL_BENCH_PORT_BASE .. +5), a work dir removed at exit with every
# process started by `start`, the nginx origin with its 1 KiB and 64 KiB
# objects, and the two Squid 5.7 parents (memory cache), each probed.
# Expects: $here, $helper, $py.

# ------------------------------------------------------------ ports
base=${CARPOOL_BENCH_PORT_BASE:-18180}
port_origin=$base port_p1=$((base + 1)) port_p2=$((base + 2))
port_squid=$((base + 3)) port_haproxy=$((base + 4)) port_carpool=$((base + 5))
origin="127.0.0.1:$port_origin"
for p in $port_origin $port_p1 $port_p2 $port_squid $port_haproxy $port_carpool; do
    if ss -Htln "sport = :$p" | grep -q .; then
        echo "port $p is already in use (a packaged nginx/haproxy/squid, or a previous run?):" >&2
        ss -Htlnp "sport = :$p" >&2
        echo "stop it or set CARPOOL_BENCH_PORT_BASE to a free range" >&2
        exit 1
    fi
done

# ------------------------------------------------------------ work dir, cleanup
work=$(mktemp -d /tmp/carpool-bench-frontend.XXXXXX)
chmod 755 "$work"
tag="carpbench$$" # Squid wants an alphanumeric service name
declare -A pids=()
cleanup() {
    local rc=$? name pid i
    trap - EXIT INT TERM
    for name in "${!pids[@]}"; do kill -TERM "${pids[$name]}" 2>/dev/null || true; done
    for name in "${!pids[@]}"; do
        pid=${pids[$name]}
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -f /dev/shm/"$tag"* 2>/dev/null || true
    if [ "${CARPOOL_BENCH_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
    exit $rc
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# Starts a background server; its output goes to $work/NAME.out.
start() {
    local name=$1; shift
    "$@" >"$work/$name.out" 2>&1 &
    pids[$name]=$!
}
stop() {
    local name=$1 pid=${pids[$1]:-} i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "pids[$name]"
}
alive() { kill -0 "${pids[$1]}" 2>/dev/null; }
logtail() { echo "---- last lines of $1 ----"; tail -n "${3:-15}" "$2" 2>/dev/null | sed 's/^/  /'; }

# ------------------------------------------------------------ origin
n1k=2000 n64k=500
sets=("1k:$n1k:1024" "64k:$n64k:65536")
echo "== origin: nginx on $origin ($n1k x 1 KiB at /1k/N, $n64k x 64 KiB at /64k/N)"
"$py" "$helper" gen "$work/www" $n1k $n64k
chmod -R a+rX "$work/www"
mkdir -p "$work/nginx/tmp"
nginx_user=""
[ "$(id -u)" = 0 ] && nginx_user="user www-data;" && { id www-data >/dev/null 2>&1 || nginx_user="user nobody nogroup;"; }
cat >"$work/nginx/nginx.conf" <<EOF
$nginx_user
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    server {
        listen $origin;
        root $work/www;
        location / { add_header Cache-Control "max-age=3600" always; }
    }
}
EOF
start origin nginx -p "$work/nginx/" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf"

# ------------------------------------------------------------ Squid configs
# Common part: foreground, own files, no access log, memory only, quick shutdown.
squid_common() { # NAME DIR PORT
    cat <<EOF
http_port 127.0.0.1:$3
visible_hostname $1
pid_filename $2/squid.pid
cache_log $2/cache.log
access_log none
cache_store_log none
netdb_filename none
pinger_enable off
logfile_rotate 0
coredump_dir $2
shutdown_lifetime 0 seconds
http_access allow localhost
http_access deny all
EOF
}
mkdir_squid() { mkdir -p "$1"; chown proxy:proxy "$1" 2>/dev/null || true; }
for p in p1 p2; do
    d="$work/squid-$p"; mkdir_squid "$d"
    port_var="port_$p"
    {
        squid_common "carpbench-$p" "$d" "${!port_var}"
        cat <<EOF
cache_mem 256 MB
maximum_object_size_in_memory 1 MB
memory_replacement_policy lru
EOF
    } >"$d/squid.conf"
done
echo "== parents: Squid on 127.0.0.1:$port_p1 and 127.0.0.1:$port_p2 (memory cache)"
start p1 squid -N -n "${tag}p1" -f "$work/squid-p1/squid.conf"
start p2 squid -N -n "${tag}p2" -f "$work/squid-p2/squid.conf"

probe_or_die() { # NAME PORT LOG
    local out
    if ! out=$("$py" "$helper" probe "$2" "http://$origin/1k/0" 20); then
        echo "FAIL: $1 on port $2 does not answer: $out" >&2
        logtail "$1" "$3" >&2; logtail "$1 output" "$work/$1.out" >&2
        exit 1
    fi
    echo "  $1: $out"
}
probe_or_die origin "$port_origin" "$work/nginx/error.log" # nginx takes absolute-form too
probe_or_die p2 "$port_p2" "$work/squid-p2/cache.log"
probe_or_die p1 "$port_p1" "$work/squid-p1/cache.log"

# carpool_toml FILE: the carpool frontend's config over the two parents.
carpool_toml() {
    cat >"$1" <<EOF
hash = "hrw"

[frontend]
workers = 1
# like the other frontends of the benchmark: no access log
access_log = "none"

[[parent]]
name = "p1"
host = "127.0.0.1"
port = $port_p1

[[parent]]
name = "p2"
host = "127.0.0.1"
port = $port_p2
EOF
}
