//! Interop with a real Squid 5.7: the wiki page's topology with carpool as the
//! CARP frontend and Squid caches as its parents.

mod common;

use std::sync::atomic::Ordering;

use common::*;

#[test]
fn carpool_frontend_over_squid_caches() {
    if let Err(why) = squid_binary() {
        eprintln!("SKIP: carpool_frontend_over_squid_caches: {why}");
        return;
    }
    let origin = Parent::start("origin");
    let cache = "cache_mem 32 MB\nmaximum_object_size_in_memory 1 MB\nhttp_access allow all\n";
    let (sq1, sq2) = (Squid::start("sq1", cache), Squid::start("sq2", cache));
    let conf = format!(
        "hash = \"hrw\"\n[[parent]]\nname = \"sq1\"\nhost = \"127.0.0.1\"\nport = {}\n[[parent]]\nname = \"sq2\"\nhost = \"127.0.0.1\"\nport = {}\n",
        sq1.port, sq2.port
    );
    let f = Frontend::start("squid-interop", &conf);
    let urls: Vec<String> = (0..40)
        .map(|i| format!("http://127.0.0.1:{}/obj/{i}", origin.port))
        .collect();
    let owners = route(&conf, &urls);
    for round in 0..2 {
        for (url, owner) in urls.iter().zip(&owners) {
            let r = get(&f, url);
            assert_eq!(
                r.status,
                200,
                "{url}: {}\n{}\n{}",
                r.head,
                sq1.diagnostics(),
                f.stderr()
            );
            assert!(r.text().starts_with("origin GET /obj/"), "{}", r.text());
            let x_cache = r.header("x-cache").unwrap_or_default();
            let want = if round == 0 { "MISS" } else { "HIT" };
            assert_eq!(
                x_cache,
                format!("{want} from {owner}.test"),
                "{url} round {round}: {}\n{}",
                r.head,
                sq1.diagnostics()
            );
        }
    }
    // every URL was fetched from the origin once: each lives in one cache
    assert_eq!(origin.requests.load(Ordering::SeqCst), urls.len());
}
