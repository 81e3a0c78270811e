//! The squid.conf translation: what each directive becomes, and that a
//! squid.conf and its import are read alike.

use std::path::Path;

use super::*;
use crate::config::settings::ListenMode;
use carp::Mode;

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_squid_conf(Path::new("squid.conf"), text.as_bytes())
        .map_err(|e| e.iter().next().cloned().expect("never empty"))
}

#[test]
fn reads_carp_parents() {
    let c = parse(
        "# comment\nhttp_port 3128\ncache_peer 10.0.0.1 parent 3128 0 carp name=A weight=0 no-query\n\
         cache_peer Sib sibling 3128 0 proxy-only\n\
         cache_peer b.example parent 3128 0 carp \\\n  carp-key=hostname,path weight=3\n",
    )
    .unwrap();
    assert_eq!(c.hash, Mode::Squid);
    assert_eq!(c.parents.len(), 2);
    assert_eq!((c.parents[0].name.as_str(), c.parents[0].weight), ("A", 1));
    assert_eq!(
        (
            c.parents[1].name.as_str(),
            c.parents[1].weight,
            c.parents[1].line
        ),
        ("b.example", 3, 5)
    );
    let k = c.parents[1].carp_key.unwrap();
    assert!(k.host && k.path && !k.port);
    // the sibling, and Squid's default when no http_access is given
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("squid.conf:1: `http_access`: no http_access lines"));
    assert!(c.warnings[1].starts_with("squid.conf:4: `cache_peer`: cache_peer Sib is not a parent"));
}

#[test]
fn http_port_sets_the_listener() {
    let c = parse("http_port 127.0.0.1:3130 accel defaultsite=www.example\nhttp_port 3131\ncache_peer a parent 1 0 carp\n").unwrap();
    assert_eq!(c.frontend.server.listen, "127.0.0.1:3130".parse().unwrap());
    assert_eq!(c.frontend.mode, ListenMode::Accel);
    assert_eq!(c.frontend.default_site.as_deref(), Some("www.example"));
    assert!(
        !c.frontend.vhost,
        "without vhost, defaultsite keys every request"
    );
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c.warnings[1].contains("only the first http_port"));
    let c =
        parse("http_port 3130 accel vhost defaultsite=w\ncache_peer a parent 1 0 carp\n").unwrap();
    assert!(c.frontend.vhost);
    let c = parse("http_port 3128\ncache_peer a parent 1 0 carp\n").unwrap();
    assert_eq!(c.frontend.server.listen, "0.0.0.0:3128".parse().unwrap());
    assert_eq!(
        parse("http_port nope\ncache_peer a parent 1 0 carp\n")
            .unwrap_err()
            .key,
        "http_port"
    );
}

/// Found by fuzzing (fuzz/fuzz_targets/config_squid.rs): a host with a
/// control character (`\v127.0.0.1`: words are split at ASCII
/// whitespace, which VT is not) was taken as written, where
/// carpool.toml trims it; no such host can be reached.
#[test]
fn a_peer_host_with_a_control_character_is_refused() {
    for text in [
        "cache_peer \u{b}127.0.0.1 parent 3128 0 carp\n",
        "cache_peer a\u{1}b parent 3128 0 carp name=x\n",
        "cache_peer a\u{85} parent 3128 0 carp\n",
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (1, "cache_peer"), "{text:?}");
        assert!(e.message.contains("hostname"), "{e}");
    }
}

/// Issue 15: squid.conf is bytes. Squid 5.7 takes `name=lat<0xE9>n1`
/// (Latin-1) and hashes those bytes as signed chars: its cache manager
/// `carp` page shows the hash cf9486ea (and 27ccf6ae for `\xc9T\xc9`).
/// The name is kept escaped; the hash unescapes it. Other lines may hold
/// any bytes too (a Latin-1 comment); words carpool reads may not.
#[test]
fn a_name_that_is_not_utf8_is_hashed_as_its_bytes() {
    let conf = b"# caf\xe9 (a Latin-1 comment)\nerror_directory /x/fran\xe7ais\n\
                 cache_peer 127.0.0.1 parent 3128 0 carp name=lat\xe9n1 no-query\n\
                 cache_peer 127.0.0.1 parent 3129 0 carp name=p2\n\
                 cache_peer 127.0.0.1 parent 3130 0 carp weight=2 name=\xc9T\xc9\n\
                 cache_peer 127.0.0.1 parent 3131 0 carp name=a\\x41 # name=\xff\n";
    let c = parse_squid_conf(Path::new("squid.conf"), conf).unwrap();
    let names: Vec<&str> = c.parents.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["lat\\xe9n1", "p2", "\\xc9T\\xc9", "a\\x5cx41"]);
    let hash = |name: &str| {
        let bytes = carp::table::unescape_name(name);
        carp::hash::carp_member_hash(&bytes, carp::hash::CharSign::Signed)
    };
    assert_eq!(hash(&c.parents[0].name), 0xcf9486ea);
    assert_eq!(hash(&c.parents[1].name), 0x5183b2c2);
    assert_eq!(hash(&c.parents[2].name), 0x27ccf6ae);
    assert_eq!(
        carp::table::unescape_name(&c.parents[3].name).as_ref(),
        b"a\\x41"
    );
    c.table().unwrap();
    // a word carpool reads must still be text
    let e = parse_squid_conf(
        Path::new("squid.conf"),
        b"cache_peer 127.0.0.1 parent 3128 0 carp weight=\xe9\n",
    )
    .unwrap_err();
    let e = e.iter().next().unwrap();
    assert_eq!((e.line, e.key.as_str()), (1, "cache_peer"));
    // names are compared as bytes, ASCII case folded, as Squid does
    let twice =
        b"cache_peer a parent 1 0 carp name=X\xe9\ncache_peer b parent 1 0 carp name=x\xe9\n";
    assert!(parse_squid_conf(Path::new("squid.conf"), twice).is_err());
    let two = b"cache_peer a parent 1 0 carp name=x\xe9\ncache_peer b parent 1 0 carp name=x\xc9\n";
    assert_eq!(
        parse_squid_conf(Path::new("squid.conf"), two)
            .unwrap()
            .parents
            .len(),
        2
    );
}

#[test]
fn errors() {
    let e = parse("cache_peer a parent 3128 0 carp-key=host carp\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (1, "carp-key"));
    let e = parse("cache_peer a parent 3128 0 carp\ncache_peer b parent 1 0 carp name=A\n")
        .unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (2, "name"));
    let e = parse("cache_peer a parent x 0 carp\n").unwrap_err();
    assert_eq!(e.line, 1);
    let e = parse("http_port 3128\n").unwrap_err();
    assert_eq!(e.key, "cache_peer");
    let e = parse("\ncache_peer a parent 1 0 carp weight=abc\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (2, "weight"));
}

#[test]
fn every_bad_line_is_reported() {
    let text = "cache_peer a parent x 0 carp\nhttp_port nope\ncache_peer b parent 1 0 carp\n\
                cache_peer c parent 1 0 carp weight=abc\n";
    let e = parse_squid_conf(Path::new("squid.conf"), text.as_bytes()).unwrap_err();
    let at: Vec<_> = e.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(at, [(1, "cache_peer"), (2, "http_port"), (4, "weight")]);
    assert_eq!(e.to_string().lines().count(), 3, "{e}");
}

/// The decision of a frontend's rules for a request from `client` (`GET
/// url`, or `CONNECT host:port`) on listener port 3128 named `port_name`.
fn decide(c: &Config, client: &str, method: &str, url: &str) -> bool {
    let uri = carp::normalize::normalize_target(method.as_bytes(), url.as_bytes())
        .expect("a valid target");
    let s = &c.frontend.server;
    let port_name = s.port_name.clone().unwrap_or(s.listener_name.clone());
    let f = proxy::rules::Facts {
        client: client.parse().unwrap(),
        local_port: 3128,
        port_name: &port_name,
        method: method.as_bytes(),
        scheme: uri.scheme(),
        host: uri.host(),
        port: uri.port(),
        url: uri.effective(),
        path: uri.path_and_query(),
    };
    matches!(s.access_rules.check(&f), proxy::rules::Verdict::Allow)
}

const PEER: &str = "cache_peer 127.0.0.1 parent 4001 0 carp name=c1\n";

/// Issue 15: `--squid-conf` applies `acl` and `http_access`, with Squid's
/// meaning: repeated acl lines add values, `-i` lasts to the end of its
/// line, the implicit last rule, and the predefined ACLs.
#[test]
fn access_rules_are_squids() {
    let conf = format!(
        "{PEER}http_port 127.0.0.1:3128 name=edge\n\
         acl lan src 10.0.0.0/8\nacl lan src 192.168.0.0/16\n\
         acl Safe_ports port 80 443\nacl Safe_ports port 1025-65535\n\
         acl img url_regex -i \\.GIF$\nacl img url_regex \\.PNG$\n\
         acl edge myportname edge\n\
         http_access deny !Safe_ports\nhttp_access deny img\n\
         http_access allow lan edge\nhttp_access allow localhost\n"
    );
    let c = parse(&conf).unwrap();
    assert!(decide(&c, "10.1.1.1", "GET", "http://a/"));
    assert!(decide(&c, "192.168.3.3", "GET", "http://a:8080/"));
    assert!(
        !decide(&c, "192.168.3.3", "GET", "http://a:22/"),
        "!Safe_ports"
    );
    assert!(
        !decide(&c, "172.16.0.1", "GET", "http://a/"),
        "implicit deny"
    );
    assert!(decide(&c, "127.0.0.1", "GET", "http://a/"), "localhost");
    assert!(
        !decide(&c, "10.1.1.1", "GET", "http://a/x.gif"),
        "-i on its line"
    );
    assert!(!decide(&c, "10.1.1.1", "GET", "http://a/x.PNG"));
    assert!(
        decide(&c, "10.1.1.1", "GET", "http://a/x.png"),
        "-i ends with its line, as in Squid"
    );
    // the rules are the whole policy: carpool's own checks do not narrow them
    assert_eq!(c.frontend.server.safe_ports, [1..=65535]);
    assert_eq!(c.frontend.server.connect_ports, [1..=65535]);
    assert_eq!(c.frontend.server.allow_clients.len(), 2);
    assert_eq!(c.frontend.server.port_name.as_deref(), Some("edge"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // the last rule a deny: the implicit one allows
    let c = parse(&format!(
        "{PEER}acl bad src 10.0.0.1\nhttp_access deny bad\n"
    ))
    .unwrap();
    assert!(!decide(&c, "10.0.0.1", "GET", "http://a/"));
    assert!(decide(&c, "10.0.0.2", "GET", "http://a/"));
    // no http_access at all: Squid denies everything, so does carpool, loudly
    let c = parse(PEER).unwrap();
    assert!(!decide(&c, "127.0.0.1", "GET", "http://a/"));
    assert!(
        c.warnings[0].contains("denies every request"),
        "{:?}",
        c.warnings
    );
}

/// A rule that names an ACL carpool cannot evaluate is made stricter, never
/// looser, and said so: an allow never matches; a deny matches as if the
/// ACL did, negated or not.
#[test]
fn rules_naming_unsupported_acls_only_get_stricter() {
    let conf = format!(
        "{PEER}acl users proxy_auth REQUIRED\nacl office time MTWHF 08:00-18:00\n\
         acl lan src 10.0.0.0/8\nacl dev src 10.9.0.0/16\n\
         http_access deny dev !office\nhttp_access allow lan users\nhttp_access allow lan\n"
    );
    let c = parse(&conf).unwrap();
    assert!(
        !decide(&c, "10.9.0.1", "GET", "http://a/"),
        "deny dev !office: denied"
    );
    assert!(
        decide(&c, "10.1.0.1", "GET", "http://a/"),
        "allow lan still allows"
    );
    assert!(!decide(&c, "172.16.0.1", "GET", "http://a/"));
    let w = c.warnings.join("\n");
    for expected in [
        "squid.conf:2: `acl`: ACL type \"proxy_auth\" is not supported",
        "squid.conf:3: `acl`: ACL type \"time\" is not supported",
        "squid.conf:6: `http_access`: office cannot be evaluated by carpool",
        "squid.conf:7: `http_access`: never matches here: users",
    ] {
        assert!(w.contains(expected), "{expected}\nin:\n{w}");
    }
    // an allow rule that never matches keeps Squid's implicit last rule
    let c = parse(&format!(
        "{PEER}acl u proxy_auth REQUIRED\nhttp_access allow u\n"
    ))
    .unwrap();
    assert!(!decide(&c, "127.0.0.1", "GET", "http://a/"));
}

/// ACL values from a file (`"/path"`), one per line with comments; an
/// include's lines are told by their own file and line.
#[test]
fn acl_files_and_includes() {
    let dir = std::env::temp_dir().join(format!("carpool-squid-acl-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::write(
        dir.join("clients.txt"),
        "# the office\n10.1.0.0/16\n\n10.2.0.0/16\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("conf.d/rules.conf"),
        "acl office src \"clients.txt\"\nhttp_access allow office\nacl broken port x\n",
    )
    .unwrap();
    let main = dir.join("squid.conf");
    let conf = format!("{PEER}include conf.d/*.conf\n");
    std::fs::write(&main, &conf).unwrap();
    // clients.txt is relative to the file naming it: conf.d/
    let e = parse_squid_conf(&main, conf.as_bytes()).unwrap_err();
    let e: Vec<_> = e.iter().collect();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e.iter().all(|e| e.file.ends_with("conf.d/rules.conf")));
    assert_eq!((e[0].line, e[1].line), (1, 3));
    std::fs::rename(dir.join("clients.txt"), dir.join("conf.d/clients.txt")).unwrap();
    std::fs::write(
        dir.join("conf.d/rules.conf"),
        "acl office src \"clients.txt\"\nhttp_access allow office\n",
    )
    .unwrap();
    let c = parse_squid_conf(&main, conf.as_bytes()).unwrap();
    assert!(decide(&c, "10.2.3.4", "GET", "http://a/"));
    assert!(!decide(&c, "10.3.3.4", "GET", "http://a/"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An error the carpool.toml reader finds in a translated value is told at
/// the squid.conf line it came from.
#[test]
fn errors_in_translated_values_name_the_squid_conf_line() {
    let e = parse(&format!("{PEER}\n\nworkers 100000\n")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (4, "workers"), "{e}");
    let e = parse(&format!("{PEER}forward_timeout 3 years\n")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (2, "forward_timeout"), "{e}");
}

/// The same config, wherever it was read from: a squid.conf, or the
/// carpool.toml `import-squid` writes for it.
fn same_config(a: &Config, b: &Config) {
    assert_eq!(a.hash, b.hash);
    let strip = |c: &Config| {
        let mut ps = c.parents.clone();
        for p in &mut ps {
            p.line = 0;
        }
        ps
    };
    assert_eq!(strip(a), strip(b));
    assert_eq!(a.frontend, b.frontend);
    assert_eq!(a.health, b.health);
    assert_eq!(a.cache, b.cache);
}

/// `import-squid`'s output reads back as the configuration `--squid-conf`
/// runs, for a frontend; a backend becomes a one-cache array.
#[test]
fn an_import_reads_back_as_the_squid_conf() {
    let conf = format!(
        "http_port 127.0.0.1:3130 accel defaultsite=www.example.com vhost\n\
         {PEER}cache_peer 127.0.0.1 parent 4002 0 carp name=c2 weight=3 carp-key=host,path max-conn=50 connect-fail-limit=4 connect-timeout=2\n\
         visible_hostname fe1\nworkers 2\nforward_timeout 2 minutes\n\
         acl lan src 10.0.0.0/8\nhttp_access allow lan\n\
         never_direct allow all\ncache deny all\nicp_port 0\n"
    );
    let path = Path::new("fe.conf");
    let direct = parse_squid_conf(path, conf.as_bytes()).unwrap();
    let import = import_squid(path, conf.as_bytes()).unwrap();
    assert_eq!(import.role, Role::Frontend);
    let read = parse_toml(Path::new("fe.toml"), &import.toml).unwrap();
    same_config(&direct, &read);
    assert_eq!(direct.frontend.mode, ListenMode::Accel);
    assert!(direct.frontend.vhost);
    assert_eq!(direct.health.fail_limit, 4);
    assert_eq!(direct.frontend.parent_connect_timeout.as_secs(), 2);
    assert_eq!(direct.frontend.server.forward_timeout.as_secs(), 120);
    assert_eq!(direct.frontend.server.workers, 2);
    assert_eq!(direct.parents[1].max_conn, 50);
    assert_eq!(direct.parents[1].line, 3, "told at the squid.conf line");
    // never_direct and cache deny: by design; icp_port: a note
    assert!(import
        .toml
        .contains("never_direct allow all: a carpool frontend always"));
    let notes: Vec<String> = import.notes.iter().map(|n| n.to_string()).collect();
    assert_eq!(notes, ["fe.conf:11: `icp_port`: carpool speaks no ICP"]);

    let backend = "http_port 3128\nvisible_hostname cache7\n\
         cache_peer origin.example parent 8080 0 originserver no-query name=o\n\
         cache_mem 256 MB\nmaximum_object_size 20 MB\nmaximum_object_size_in_memory 512 KB\n\
         cache_dir aufs /var/spool/squid 10000 16 256\n\
         access_log daemon:/var/log/squid/access.log squid\n\
         acl frontends src 10.0.0.0/24\nhttp_access allow frontends\n";
    let import = import_squid(Path::new("be.conf"), backend.as_bytes()).unwrap();
    assert_eq!(import.role, Role::Cache);
    let c = &import.config;
    let s = c.cache_settings("cache7").unwrap();
    assert_eq!(s.server.listen.port(), 3128);
    assert_eq!(s.mem, crate::config::settings::Budget::Bytes(256 << 20));
    assert_eq!(s.disk, crate::config::settings::Budget::Bytes(10000 << 20));
    assert_eq!(
        s.dir.as_deref(),
        Some(Path::new("/var/spool/squid/carpool/cache7"))
    );
    assert_eq!(s.max_object_size, 20 << 20);
    assert_eq!(s.mem_max_object, 512 << 10);
    let origin = s.origin_servers.default.as_ref().unwrap();
    assert_eq!(
        (origin.host.as_str(), origin.port),
        ("origin.example", 8080)
    );
    assert_eq!(
        s.server.access_log,
        Some(httpx::accesslog::Destination::File(
            "/var/log/squid/access.log".into()
        ))
    );
    assert!(!s.server.access_rules.is_empty());
    let read = parse_toml(Path::new("be.toml"), &import.toml).unwrap();
    same_config(c, &read);
}

/// refresh_pattern lines as Squid reads them: minutes in C's bases, cropped
/// to a year (said), options listed; a bad regex names its line.
#[test]
fn refresh_patterns_as_squid_reads_them() {
    let conf = "http_port 3128\nrefresh_pattern -i \\.jpg$ 010 50% 0x10\n\
                refresh_pattern ^ftp: 1440 20% 999999 ignore-reload\n\
                refresh_pattern . 0 20% 4320\n";
    let import = import_squid(Path::new("be.conf"), conf.as_bytes()).unwrap();
    let p = &import.config.cache.refresh_patterns;
    let jpg = p.limits(b"http://a/x.JPG");
    assert_eq!((jpg.min.as_secs(), jpg.max.as_secs()), (8 * 60, 16 * 60));
    assert!(
        import.toml.contains("min = 8\npercent = 50\nmax = 16\n"),
        "{}",
        import.toml
    );
    assert!(import.toml.contains("max = 525600"), "{}", import.toml);
    let notes: Vec<String> = import.notes.iter().map(|n| n.to_string()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("be.conf:3: `refresh_pattern`: minutes cropped")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n
                .contains("be.conf:3: `refresh_pattern`: refresh_pattern option ignore-reload")),
        "{notes:?}"
    );
    let e = import_squid(Path::new("be.conf"), b"refresh_pattern ( 0 20% 10\n").unwrap_err();
    let e = e.iter().next().unwrap();
    assert_eq!((e.line, e.key.as_str()), (1, "regex"), "{e}");
}

/// `login=PASS` (and `PASSTHRU`, the same without external ACLs) is
/// `pass_credentials`; Squid compares the word case-sensitively, and so does
/// this; another form is listed without its password.
#[test]
fn login_pass_passes_credentials() {
    let c = parse(
        "cache_peer a parent 1 0 carp login=PASS\ncache_peer b parent 1 0 carp login=PASSTHRU\n\
         cache_peer c parent 1 0 carp login=pass\ncache_peer d parent 1 0 carp login=u:secret\n",
    )
    .unwrap();
    let pass: Vec<bool> = c.parents.iter().map(|p| p.pass_credentials).collect();
    assert_eq!(pass, [true, true, false, false]);
    let w = c.warnings.join("\n");
    assert!(
        w.contains("squid.conf:4: `cache_peer`: option login=…"),
        "{w}"
    );
    assert!(!w.contains("secret"), "{w}");
}

/// A file an include or an ACL names must be a small regular file: a device
/// or a pipe could be endless.
#[test]
fn only_regular_files_are_read() {
    let e = parse(&format!(
        "{PEER}acl z src \"/dev/zero\"\nhttp_access allow z\n"
    ))
    .unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (2, "acl"), "{e}");
    assert!(e.message.contains("not a regular file"), "{e}");
    let e = parse(&format!("{PEER}include /dev/zero\n")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (2, "include"), "{e}");
}
