//! Criterion benchmarks of `Table::select` (the per-request routing cost) for
//! 4, 16 and 64 members in every mode, and of request-line normalization.

use carp::normalize::{parse_input, Outcome};
use carp::{Member, Mode, RequestUri, Table};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

fn targets() -> Vec<RequestUri> {
    (0..1024)
        .map(|i| {
            let line = format!(
                "http://host{}.example.com/static/img/{}/photo-{}.jpg?v={}",
                i % 97,
                i % 13,
                i,
                i * 7
            );
            match parse_input(line.as_bytes()) {
                Outcome::Route(r) => r,
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

fn bench_select(c: &mut Criterion) {
    let reqs = targets();
    let mut group = c.benchmark_group("select");
    for mode in [Mode::Hrw, Mode::CarpV1, Mode::Squid] {
        for n in [4usize, 16, 64] {
            let members = (0..n)
                .map(|i| Member::new(format!("cache{i}"), 1 + (i % 3) as u32))
                .collect();
            let table = Table::new(mode, members).expect("table");
            let mut i = 0;
            group.bench_with_input(BenchmarkId::new(mode.as_str(), n), &table, |b, t| {
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    black_box(t.select(black_box(&reqs[i]), |_| true))
                })
            });
        }
    }
    group.finish();
}

fn bench_normalize(c: &mut Criterion) {
    let line = b"GET http://Host42.Example.COM:80/static/img/7/photo-42.jpg?v=294 HTTP/1.1";
    c.bench_function("normalize/request_line", |b| {
        b.iter(|| black_box(parse_input(black_box(line))))
    });
}

criterion_group!(benches, bench_select, bench_normalize);
criterion_main!(benches);
