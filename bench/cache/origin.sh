# Sourced by bench/cache/run and bench/cache/ab (not run on its own): the nginx
# origin (in the foreground, its own prefix and config under $work) serving
# $n1k x 1 KiB at /1k/N and $n64k x 64 KiB at /64k/N with
# Cache-Control: max-age=$max_age, its access log at $origin_log (one line per
# request that reaches it: the proof that hits stay in the cache), probed.
# Also defines nginx_user/nginx_owner (the user nginx workers run as under root)
# and nginx_temp_paths, which bench/cache/run's nginx cache uses too.
# Expects: $work, $helper, $origin, $port_origin, $n1k, $n64k, $max_age,
# $probe_s, and the functions start and logtail.

nginx_user="" nginx_owner="" # as root, nginx workers run as www-data (or nobody)
if [ "$(id -u)" = 0 ]; then
    if id www-data >/dev/null 2>&1; then nginx_owner=www-data; else nginx_owner=nobody; fi
    nginx_user="user $nginx_owner;"
fi
nginx_temp_paths() { # DIR
    local k
    for k in client_body proxy fastcgi uwsgi scgi; do echo "    ${k}_temp_path $1/tmp/$k;"; done
}
echo "== origin: nginx on $origin ($n1k x 1 KiB at /1k/N, $n64k x 64 KiB at /64k/N, Cache-Control: max-age=$max_age)"
python3 "$helper" gen "$work/www" $n1k $n64k
echo ok >"$work/www/probe" # probes use /probe, so that the warm-up fetches each object exactly once
chmod -R a+rX "$work/www"
mkdir -p "$work/origin/tmp"
: >"$origin_log"
cat >"$work/origin/nginx.conf" <<EOF
$nginx_user
worker_processes 1;
daemon off;
pid $work/origin/nginx.pid;
error_log $work/origin/error.log warn;
events { worker_connections 4096; }
http {
    # one line per request that reaches the origin: the proof that hits stay in the cache
    access_log $origin_log;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
$(nginx_temp_paths "$work/origin")
    server {
        listen $origin;
        root $work/www;
        # static files carry Last-Modified and ETag; max-age makes every cache keep them fresh
        location / { add_header Cache-Control "max-age=$max_age" always; }
    }
}
EOF
start origin nginx -p "$work/origin/" -e "$work/origin/error.log" -c "$work/origin/nginx.conf"
if ! out=$(python3 "$helper" probe "$port_origin" origin "$origin" /probe "$probe_s"); then
    echo "FAIL: origin on port $port_origin does not answer: $out" >&2
    logtail origin "$work/origin/error.log" >&2; logtail "origin output" "$work/origin.out" >&2
    exit 1
fi
echo "  origin: $out"

