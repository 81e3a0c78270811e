//! The frontend's metric families, named from the request layer's counts
//! (`carpool_frontend_requests_total{parent, status}`: each client request
//! once, under the parent that answered it, `""` when none did) and from
//! the parents' health: up, in flight, failures by kind, latency of
//! connecting, of the first byte and of the whole request, bytes; with
//! `bounded_load`, the requests moved away from each parent and the
//! counts the bound uses.

use std::borrow::Cow;
use std::collections::BTreeMap;

use proxy::metrics::{FailureKind, Families, Histogram, Labels, PeerStats, Snapshot};

use super::Shared;

fn parent(name: &str) -> Labels {
    vec![(Cow::Borrowed("parent"), name.to_string())]
}

/// Adds the frontend's families to a scrape.
pub fn families(shared: &Shared, snap: &Snapshot, f: &mut Families) {
    let none = PeerStats::default();
    let stats = |name: &str| snap.peers.get(name).unwrap_or(&none);
    // every request once, by the parent that answered and the status
    let mut by: BTreeMap<(&str, u16), u64> = BTreeMap::new();
    for (name, p) in &snap.peers {
        for ((status, _, _), n) in &p.answered {
            *by.entry((name.as_str(), *status)).or_default() += n;
        }
    }
    let rows = by
        .into_iter()
        .map(|((name, status), n)| {
            let mut l = parent(name);
            l.push((Cow::Borrowed("status"), status.to_string()));
            (l, n as f64)
        })
        .collect();
    f.counter(
        "carpool_frontend_requests",
        "Client requests answered, once each, under the parent that answered (\"\": none).",
        rows,
    );
    // the parents of the current routing (a cache that left is no longer
    // shown; its series end)
    let routing = shared.members.current();
    let parents = routing.parents();
    let names = parents.iter().map(|p| p.name.as_str());
    let mode = shared.members.mode().as_str().to_string();
    f.gauge(
        "carpool_frontend_info",
        "Always 1; `hash` is the routing table's hash mode.",
        vec![(vec![(Cow::Borrowed("hash"), mode)], 1.0)],
    );
    let info = parents
        .iter()
        .map(|p| {
            let mut l = parent(&p.name);
            l.push((Cow::Borrowed("address"), p.addr.to_string()));
            let origin = if p.announced { "announced" } else { "config" };
            l.push((Cow::Borrowed("origin"), origin.to_string()));
            (l, 1.0)
        })
        .collect();
    f.gauge(
        "carpool_frontend_parent_info",
        "Always 1; `address` is where the parent is reached, `origin` whether it is configured or announced itself.",
        info,
    );
    let weights = parents
        .iter()
        .zip(routing.table().map(|t| t.members()).unwrap_or_default())
        .map(|(p, m)| (parent(&p.name), f64::from(m.weight)))
        .collect();
    f.gauge(
        "carpool_frontend_parent_weight",
        "The parent's weight in the routing table.",
        weights,
    );
    let up = parents
        .iter()
        .map(|p| {
            let alive = shared.health.is_alive(p.slot);
            (parent(&p.name), if alive { 1.0 } else { 0.0 })
        })
        .collect();
    f.gauge(
        "carpool_frontend_parent_up",
        "1 when the parent is alive, 0 when dead.",
        up,
    );
    let since = parents
        .iter()
        .map(|p| (parent(&p.name), shared.health.since(p.slot)))
        .collect();
    f.gauge(
        "carpool_frontend_parent_state_since_seconds",
        "When the parent last became alive or dead (the frontend's start if never), seconds since the epoch.",
        since,
    );
    let expected = parents
        .iter()
        .zip(shared.expected_shares(&routing).iter())
        .map(|(p, s)| (parent(&p.name), *s))
        .collect();
    f.gauge(
        "carpool_frontend_parent_expected_share",
        "The share of URLs the parent owns when every parent is alive (from the table, over a sample of URLs).",
        expected,
    );
    let in_flight = names
        .clone()
        .map(|n| (parent(n), stats(n).in_flight.max(0) as f64))
        .collect();
    f.gauge(
        "carpool_frontend_parent_inflight",
        "Requests waiting on the parent or being relayed from it.",
        in_flight,
    );
    if let Some(b) = &shared.bound {
        let moves = parents
            .iter()
            .map(|p| (parent(&p.name), b.moves_of(p.slot) as f64))
            .collect();
        f.counter(
            "carpool_frontend_bounded_load_moves",
            "Requests moved away from the parent because it was at the bounded_load bound (to the next parent of their URL's ranking within it).",
            moves,
        );
        let loads = parents
            .iter()
            .map(|p| (parent(&p.name), b.load_of(p.slot) as f64))
            .collect();
        f.gauge(
            "carpool_frontend_bounded_load_inflight",
            "Requests given to the parent whose exchange has not ended, across all workers, as bounded_load counts them.",
            loads,
        );
    }
    let mut failures = Vec::new();
    for n in names.clone() {
        for k in FailureKind::ALL {
            let mut l = parent(n);
            l.push((Cow::Borrowed("kind"), k.as_str().to_string()));
            failures.push((l, stats(n).failures[k as usize] as f64));
        }
    }
    f.counter(
        "carpool_frontend_parent_failures",
        "Failed attempts on the parent, by kind (connect, timeout, reset, bad_response).",
        failures,
    );
    let hist = |pick: fn(&PeerStats) -> &Histogram| -> Vec<(Labels, Histogram)> {
        names
            .clone()
            .map(|n| (parent(n), pick(stats(n)).clone()))
            .collect()
    };
    f.histogram(
        "carpool_frontend_parent_connect_seconds",
        "Time to open a connection to the parent.",
        hist(|p| &p.connect),
    );
    f.histogram(
        "carpool_frontend_parent_first_byte_seconds",
        "Time from sending a request to the parent to its response head.",
        hist(|p| &p.first_byte),
    );
    f.histogram(
        "carpool_frontend_parent_request_seconds",
        "Time from a client's request head to the last byte of its answer, by the parent that answered.",
        hist(|p| &p.total),
    );
    let bytes = |pick: fn(&PeerStats) -> u64| -> Vec<(Labels, f64)> {
        names
            .clone()
            .map(|n| (parent(n), pick(stats(n)) as f64))
            .collect()
    };
    f.counter(
        "carpool_frontend_parent_response_bytes",
        "Bytes sent to clients from the parent's answers (heads included).",
        bytes(|p| p.bytes_out),
    );
    f.counter(
        "carpool_frontend_parent_request_body_bytes",
        "Request body bytes sent to the parent.",
        bytes(|p| p.bytes_in),
    );
}
