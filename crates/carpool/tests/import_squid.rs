//! `carpool import-squid` on a backend's squid.conf (issue 15): the
//! carpool.toml it writes runs as a real `carpool cache` that sends its
//! misses to the squid.conf's origin server, stores what it gets, and keeps
//! the squid.conf's access rules; what it did not carry over is listed
//! with file and line.

mod common;

use std::process::Command;

use common::origin::Origin;
use common::*;

/// `GET url` to 127.0.0.1:`port` from the address `src`.
fn get_from(src: &str, port: u16, url: &str) -> Response {
    let raw = format!("GET {url} HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n");
    exchange_from(src, port, &raw).expect("a response")
}

#[test]
fn a_backend_squid_conf_runs_as_a_carpool_cache() {
    let origin = Origin::start();
    let dir = temp_dir("import-backend");
    let conf = dir.join("backend.conf");
    std::fs::write(
        &conf,
        format!(
            "# a Squid cache behind CARP frontends\n\
             http_port 127.0.0.1:3128\nvisible_hostname cache1\nicp_port 0\n\
             cache_peer 127.0.0.1 parent {} 0 originserver no-query name=origin\n\
             cache_mem 64 MB\nmaximum_object_size 10 MB\n\
             acl frontends src 127.0.0.1\nacl Safe_ports port 80\n\
             http_access deny !Safe_ports\nhttp_access allow frontends\n\
             refresh_pattern . 0 20% 4320 override-expire\n",
            origin.port
        ),
    )
    .unwrap();
    let out = dir.join("carpool.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .arg("import-squid")
        .arg(&conf)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("translated as a cache"), "{stderr}");
    // listed, with file and line, on stderr and in the file
    let icp = format!("{}:4: `icp_port`: carpool speaks no ICP", conf.display());
    let option = format!(
        "{}:12: `refresh_pattern`: refresh_pattern option override-expire is not carried over",
        conf.display()
    );
    let toml = std::fs::read_to_string(&out).unwrap();
    for line in [&icp, &option] {
        assert!(stderr.contains(line.as_str()), "{line}\n{stderr}");
        assert!(toml.contains(line.as_str()), "{line}\n{toml}");
    }
    assert!(toml.contains("origin_server = \"127.0.0.1:"), "{toml}");

    let conf_arg = out.display().to_string();
    let cache = Cache::start_with(
        "import-backend-run",
        false,
        &["-c", &conf_arg, "--name", "cache1"],
    );
    let url = "http://www.example.com/obj?cc=max-age%3D600";
    for round in 0..2 {
        let r = get_from("127.0.0.1", cache.port, url);
        assert_eq!(
            r.status,
            200,
            "round {round}: {}\n{}",
            r.head,
            cache.stderr()
        );
        assert!(r.text().contains("/obj v=1"), "{}", r.text());
    }
    // the name does not resolve to the origin: the origin server was used,
    // once, and the second answer was a hit
    assert_eq!(origin.count("/obj"), 1);
    // the squid.conf's rules: other clients and unsafe ports are refused
    assert_eq!(get_from("127.0.0.2", cache.port, url).status, 403);
    let r = get_from("127.0.0.1", cache.port, "http://www.example.com:8080/obj");
    assert_eq!(r.status, 403, "{}", r.head);
    let _ = std::fs::remove_dir_all(&dir);
}
