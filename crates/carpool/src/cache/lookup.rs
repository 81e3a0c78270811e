//! Finding a request's stored object: under the URL's own key, or, when the
//! URL has a `Vary` marker, under the key of the request's variant. An
//! object whose body fails the check of what the request gets first is not
//! found ([`super::hit::check_ahead`]).

use cache_store::{Hit, Key};
use httpx::RequestHead;

use super::hit::check_ahead;
use super::meta::{self, Meta, Stored};
use super::policy;
use super::Cache;

/// What the lookup found for a request.
pub(super) struct Found {
    /// The variant's key when the URL has a `Vary` marker (else the object
    /// lives under the URL's own key: see [`Found::key`]).
    pub(super) variant: Option<Vec<u8>>,
    /// The URL's `Vary` marker (fields, nonce), when it has one.
    pub(super) vary: Option<(Vec<String>, u64)>,
    /// The stored object.
    pub(super) object: Option<(Hit, Meta)>,
}

impl Found {
    /// The key the object lives (or would live) under; `base` is the URL's.
    pub(super) fn key<'a>(&'a self, base: &'a [u8]) -> &'a [u8] {
        self.variant.as_deref().unwrap_or(base)
    }
}

/// Looks up the object `head` asks for under the URL key `base`. A record
/// that cannot be read is dropped (and logged); so is a body that fails its
/// check (by the store).
pub(super) fn lookup(cache: &Cache, base: &[u8], head: &RequestHead) -> Found {
    let mut found = find(cache, base, head);
    if found
        .object
        .as_ref()
        .is_some_and(|(hit, _)| !check_ahead(head, &hit.body))
    {
        found.object = None;
    }
    found
}

fn find(cache: &Cache, base: &[u8], head: &RequestHead) -> Found {
    let mut found = Found {
        variant: None,
        vary: None,
        object: None,
    };
    let Some(hit) = cache.store.lookup(Key::of(base), base) else {
        return found;
    };
    match meta::decode(&hit.meta) {
        Some(Stored::Object(m)) => found.object = Some((hit, m)),
        Some(Stored::Vary { names, nonce }) => {
            let key = policy::variant_key(base, nonce, &names, &head.fields);
            if let Some(h) = cache.store.lookup(Key::of(&key), &key) {
                if let Some(Stored::Object(m)) = meta::decode(&h.meta) {
                    found.object = Some((h, m));
                }
            }
            found.variant = Some(key);
            found.vary = Some((names, nonce));
        }
        None => {
            tracing::warn!(key = %String::from_utf8_lossy(base), "unreadable stored record: dropped");
            cache.store.remove(Key::of(base), base);
        }
    }
    found
}
